"""The local Triton launcher and the python-backend libtorch runner, against the real tritonserver binary.

One server serves the whole module (each start costs ~5 s on 2 cores); the child-process and broken-
repository tests start their own because that is what they test.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import torch
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from service.launcher.triton_local import LocalTriton, TritonEndpoints, TritonStartError, prepare_home

pytestmark = [
    pytest.mark.integration,
    # torch 2.14 deprecates TorchScript with FutureWarning (pyproject only filters DeprecationWarning).
    pytest.mark.filterwarnings("ignore:.*torch\\.jit.*:FutureWarning"),
]

Array = npt.NDArray[np.float32]
REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL = "tiny"
SHAPE = (3, 16, 16)
FAIL_VALUE = -1000.0  # an input this low makes the model raise: the runner's error path

# Outputs deliberately listed OUTPUT__1 first: the runner must order them by N, not by config order.
CONFIG = f"""
name: "{MODEL}"
platform: "pytorch_libtorch"
max_batch_size: 8
version_policy: {{ latest {{ num_versions: 1 }} }}
input [ {{ name: "INPUT__0" data_type: TYPE_FP32 dims: [ 3, 16, 16 ] }} ]
output [
  {{ name: "OUTPUT__1" data_type: TYPE_FP32 dims: [ 4 ] }},
  {{ name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 5 ] }}
]
instance_group [ {{ count: 1 kind: KIND_CPU }} ]
dynamic_batching {{ max_queue_delay_microseconds: 20000 }}
parameters {{ key: "INTRA_OP_THREAD_COUNT" value {{ string_value: "1" }} }}
"""


class TinyNet(torch.nn.Module):
    """Conv + linear returning (logits, features): a tuple, like the FER models' heads."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, kernel_size=3, stride=2)
        self.fc = torch.nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if bool(x.min() < -999.0):
            raise RuntimeError("input out of range")
        features = torch.relu(self.conv(x)).mean(dim=(2, 3))
        return self.fc(features), features


# ------------------------------------------------------------------------------------------ helpers


def _write_repository(root: Path, model: torch.nn.Module, config: str) -> Path:
    version_dir = root / MODEL / "1"
    version_dir.mkdir(parents=True)
    torch.jit.save(torch.jit.script(model), str(version_dir / "model.pt"))
    (root / MODEL / "config.pbtxt").write_text(config)
    return root


def _eager(model: torch.nn.Module, batch: Array) -> tuple[Array, Array]:
    with torch.inference_mode():
        logits, features = model(torch.from_numpy(batch))
    return logits.numpy(), features.numpy()


def _batch(size: int, seed: int) -> Array:
    return np.random.default_rng(seed).standard_normal((size, *SHAPE), dtype=np.float32)


def _http_input(batch: Array) -> httpclient.InferInput:
    request = httpclient.InferInput("INPUT__0", list(batch.shape), "FP32")
    request.set_data_from_numpy(batch)
    return request


def _outputs(result: httpclient.InferResult | grpcclient.InferResult) -> tuple[Array, Array]:
    return result.as_numpy("OUTPUT__0"), result.as_numpy("OUTPUT__1")


def _infer_http(client: httpclient.InferenceServerClient, batch: Array) -> tuple[Array, Array]:
    return _outputs(client.infer(MODEL, [_http_input(batch)]))


def _infer_grpc(url: str, batch: Array) -> tuple[Array, Array]:
    with grpcclient.InferenceServerClient(url) as client:
        request = grpcclient.InferInput("INPUT__0", list(batch.shape), "FP32")
        request.set_data_from_numpy(batch)
        return _outputs(client.infer(MODEL, [request]))


def _assert_matches(got: tuple[Array, Array], want: tuple[Array, Array]) -> None:
    for got_array, want_array in zip(got, want, strict=True):
        assert got_array.shape == want_array.shape
        np.testing.assert_allclose(got_array, want_array, rtol=1e-5, atol=1e-6)


def _exec_count(endpoints: TritonEndpoints) -> float:
    """``nv_inference_exec_count`` for the model: how many forward calls the runner made."""
    text = urllib.request.urlopen(endpoints.metrics_url, timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith("nv_inference_exec_count{") and f'model="{MODEL}"' in line:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no nv_inference_exec_count for {MODEL} in metrics")


def _port_open(address: str) -> bool:
    host, port = address.removeprefix("http://").split("/")[0].rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True
    except OSError:
        return False


def _all_ports(endpoints: TritonEndpoints) -> list[str]:
    return [endpoints.http_url, endpoints.grpc_url, endpoints.metrics_url]


def _gone(pid: int) -> bool:
    """Gone, or a zombie: a reparented server may wait for a reaper that never comes (PID 1 is not init)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def _children(pid: int) -> list[int]:
    found = []
    for stat_path in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_path.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat_path.parent.name))
    return found


def _wait_until_gone(pids: list[int], timeout_s: float) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not all(_gone(pid) for pid in pids):
        time.sleep(0.1)
    return [pid for pid in pids if not _gone(pid)]


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return TinyNet().eval()


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory, model: torch.nn.Module) -> Path:
    return _write_repository(tmp_path_factory.mktemp("model_repository"), model, CONFIG)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepare_home(tmp_path_factory.mktemp("triton-home"))


@pytest.fixture(scope="module")
def triton(repository: Path, home: Path) -> Iterator[LocalTriton]:
    server = LocalTriton(repository, home=home, startup_timeout_s=120)
    # Started from a worker thread that exits right after: PR_SET_PDEATHSIG fires when the forking *thread*
    # ends, so this proves the launcher's keeper thread (gateways call start() via asyncio.to_thread).
    began = time.monotonic()
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(server.start).result()
    print(f"\nLocalTriton.start() took {time.monotonic() - began:.1f} s")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def http_client(triton: LocalTriton) -> Iterator[httpclient.InferenceServerClient]:
    client = httpclient.InferenceServerClient(triton.endpoints.http_url, concurrency=16)
    yield client
    client.close()


# ------------------------------------------------------------------------------------------ tests


def test_prepare_home_is_idempotent_and_refreshes_the_runner(home: Path) -> None:
    runner = home / "backends" / "pytorch" / "model.py"
    runner.write_text("stale")
    assert prepare_home(home) == home
    assert runner.read_text() == (REPO_ROOT / "service/launcher/triton_backend/pytorch/model.py").read_text()
    assert os.access(home / "bin" / "tritonserver", os.X_OK)
    assert os.access(home / "backends" / "python" / "triton_python_backend_stub", os.X_OK)


def test_ready_on_loopback_after_the_starting_thread_ended(triton: LocalTriton) -> None:
    time.sleep(0.5)  # a parent-death SIGTERM would have landed by now
    endpoints = triton.endpoints
    assert triton.is_running()
    assert endpoints.http_url.startswith("127.0.0.1:") and endpoints.grpc_url.startswith("127.0.0.1:")
    assert endpoints.metrics_url.startswith("http://127.0.0.1:") and endpoints.metrics_url.endswith(
        "/metrics"
    )
    assert len({url.rsplit(":", 1)[1] for url in _all_ports(endpoints)}) == 3
    client = httpclient.InferenceServerClient(endpoints.http_url)
    assert client.is_server_ready() and client.is_model_ready(MODEL)
    assert "nv_inference_count" in urllib.request.urlopen(endpoints.metrics_url, timeout=5).read().decode()


def test_http_and_grpc_match_eager_torch(
    triton: LocalTriton, http_client: httpclient.InferenceServerClient, model: torch.nn.Module
) -> None:
    batch = _batch(2, seed=1)
    _assert_matches(_infer_http(http_client, batch), _eager(model, batch))
    _assert_matches(_infer_grpc(triton.endpoints.grpc_url, batch), _eager(model, batch))


def test_full_batch_of_eight(http_client: httpclient.InferenceServerClient, model: torch.nn.Module) -> None:
    batch = _batch(8, seed=2)
    logits, features = _infer_http(http_client, batch)
    assert logits.shape == (8, 5) and features.shape == (8, 4)
    _assert_matches((logits, features), _eager(model, batch))


def test_concurrent_requests_are_merged_and_split_back(
    triton: LocalTriton, http_client: httpclient.InferenceServerClient, model: torch.nn.Module
) -> None:
    batches = [_batch(1 + index % 3, seed=100 + index) for index in range(12)]  # uneven sizes 1, 2, 3
    before = _exec_count(triton.endpoints)
    # async_infer, not threads: the HTTP client is gevent-based and its greenlets cannot cross threads.
    pending = [http_client.async_infer(MODEL, [_http_input(batch)]) for batch in batches]
    results = [_outputs(request.get_result()) for request in pending]
    for batch, got in zip(batches, results, strict=True):
        _assert_matches(got, _eager(model, batch))  # each request gets its own rows back
    executions = _exec_count(triton.endpoints) - before
    assert 1 <= executions < len(batches), "dynamic batching should merge requests into fewer forward calls"


def test_model_error_answers_the_request_and_the_model_keeps_serving(
    http_client: httpclient.InferenceServerClient, model: torch.nn.Module
) -> None:
    bad = np.full((1, *SHAPE), FAIL_VALUE, dtype=np.float32)
    with pytest.raises(InferenceServerException, match="input out of range"):
        _infer_http(http_client, bad)
    good = _batch(1, seed=3)
    _assert_matches(_infer_http(http_client, good), _eager(model, good))


def test_stop_then_start_reuses_the_same_ports(
    triton: LocalTriton, http_client: httpclient.InferenceServerClient, model: torch.nn.Module
) -> None:
    endpoints, pid = triton.endpoints, triton.pid
    assert pid is not None
    stubs = _children(pid)
    assert stubs, "the python-backend stub should run as a child of tritonserver"
    triton.stop()
    triton.stop()  # idempotent
    assert not triton.is_running()
    assert _wait_until_gone([pid, *stubs], timeout_s=5) == []
    assert not any(_port_open(address) for address in _all_ports(endpoints))

    assert triton.start() == endpoints
    assert triton.pid != pid
    batch = _batch(4, seed=4)
    _assert_matches(_infer_http(http_client, batch), _eager(model, batch))  # the old client reconnects
    _assert_matches(_infer_grpc(endpoints.grpc_url, batch), _eager(model, batch))


CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from service.launcher.triton_local import LocalTriton
    server = LocalTriton(Path(sys.argv[1]), home=Path(sys.argv[2]), startup_timeout_s=120)
    endpoints = server.start()
    print(server.pid, endpoints.http_url, flush=True)
    time.sleep(600)
    """
)


def test_sigkilled_parent_leaves_no_server_behind(repository: Path, home: Path) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(repository), str(home)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    server_pid = None
    try:
        assert parent.stdout is not None
        line = parent.stdout.readline()  # blocks until the server is ready (or the child dies: "")
        assert line, f"child exited with {parent.wait()} before the server was ready"
        pid_text, http_url = line.split()
        server_pid = int(pid_text)
        assert _port_open(http_url)
        stubs = _children(server_pid)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        # PDEATHSIG → SIGTERM → Triton's graceful exit (~3-5 s, --exit-timeout-secs=5).
        assert _wait_until_gone([server_pid, *stubs], timeout_s=20) == []
        assert not _port_open(http_url)
    finally:
        if parent.poll() is None:
            parent.kill()
        if server_pid is not None and not _gone(server_pid):  # a failed run must not leak a server
            os.killpg(server_pid, signal.SIGKILL)


def test_start_failure_raises_with_the_log_tail(tmp_path: Path, home: Path) -> None:
    broken = tmp_path / "repository"
    (broken / MODEL / "1").mkdir(parents=True)  # no model.pt: the model fails to load, Triton exits
    (broken / MODEL / "config.pbtxt").write_text(CONFIG)
    server = LocalTriton(broken, home=home, startup_timeout_s=120, log_path=tmp_path / "triton.log")
    with pytest.raises(TritonStartError, match=r"exited \(\d+\) before ready") as raised:
        server.start()
    assert f"failed to load '{MODEL}'" in str(raised.value)  # the cause, not just the last status table
    assert "model.pt does not exist" in str(raised.value)
    assert not server.is_running()
    assert server.log_path.read_text().strip()
