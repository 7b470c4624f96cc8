"""Run a real Triton server locally, without Docker: for development and for the integration tests.

The ``nvidia-pytriton`` wheel ships a complete ``tritonserver`` (Triton 2.51) with only the python backend.
``prepare_home`` copies it into a writable *home* and adds ``backends/pytorch/model.py`` (the TorchScript
runner in ``service/launcher/triton_backend/pytorch``), so an unchanged ``platform: "pytorch_libtorch"`` model
repository is served here exactly as the NGC image's libtorch backend serves it in production.

Default home: ``<repo>/.cache/triton-home`` (git-ignored; delete it to force a fresh copy). The server log
goes to ``<home>/logs/tritonserver-<http_port>.log`` unless ``log_path`` is given.

CLI: ``python -m service.launcher.triton_local --model-repository model_repository`` (Triton's usual ports
8000/8001/8002 unless told otherwise; 0 picks free ones), stops cleanly on Ctrl-C / SIGTERM.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import http.client
import logging
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Self

from service.launcher.triton_home import TritonStartError, prepare_home, server_env

__all__ = ["LocalTriton", "TritonEndpoints", "TritonStartError", "main", "prepare_home"]

logger = logging.getLogger(__name__)

_LOCALHOST = "127.0.0.1"
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
_EXIT_TIMEOUT_S = 5  # Triton's own grace period for in-flight requests after SIGTERM
_POLL_INTERVAL_S = 0.1
_LOG_TAIL_CHARS = 2000
_LOG_LINE_CHARS = 600
_LOG_ERROR_LINES = 20
_GLOG_ERROR = re.compile(r"E\d{4} |error: ")  # glog's "E1125 13:13:18..." lines and the final "error: ..."

Process = subprocess.Popen[bytes]


@dataclass(frozen=True)
class TritonEndpoints:
    """Where the local server listens, in the form each client expects."""

    http_url: str  # "127.0.0.1:PORT" (tritonclient style, no scheme)
    grpc_url: str  # "127.0.0.1:PORT"
    metrics_url: str  # "http://127.0.0.1:PORT/metrics"


def default_home() -> Path:
    """``<repo>/.cache/triton-home``: per checkout, git-ignored, survives reboots (unlike a tempdir)."""
    return Path(__file__).resolve().parents[2] / ".cache" / "triton-home"


# --------------------------------------------------------------------------------------- process


def _free_ports(count: int) -> list[int]:
    # All sockets stay bound until every port is read, so the kernel hands out distinct ports.
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind((_LOCALHOST, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


def _fill_free_ports(ports: tuple[int, int, int]) -> tuple[int, int, int]:
    """Replace each 0 with a free port; called once, so restarts reuse the same addresses."""
    free = iter(_free_ports(ports.count(0)))
    http_port, grpc_port, metrics_port = (port or next(free) for port in ports)
    return http_port, grpc_port, metrics_port


def _arm_parent_death_signal(prctl: Callable[..., int], parent_pid: int) -> None:
    """Runs in the child between fork and exec: the server gets SIGTERM when its parent dies."""
    prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent_pid:  # the parent died before prctl ran: that signal will never come
        os._exit(1)


def _popen_server(command: list[str], log: IO[bytes], cwd: Path) -> Process:
    """Own session (a terminal's Ctrl-C reaches only the parent) and a parent-death signal."""
    # Resolve prctl in the parent: dlopen between fork and exec can deadlock on a lock another thread holds.
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    return subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=server_env(),
        cwd=cwd,
        start_new_session=True,
        preexec_fn=functools.partial(_arm_parent_death_signal, prctl, os.getpid()),
    )


def _keep_forking_thread(spawn: Callable[[], Process], handoff: queue.Queue[Process | BaseException]) -> None:
    """Fork the server, then stay alive until it exits.

    PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, not the process. Forking from this
    thread, which lives exactly as long as the server, lets ``start()`` run from any thread
    (``asyncio.to_thread`` included) without the server being killed when that thread ends.
    """
    try:
        process = spawn()
    except BaseException as exc:  # handed to start(), which re-raises it in the caller's thread
        handoff.put(exc)
        return
    handoff.put(process)
    process.wait()


def _answers(url: str) -> bool:
    """True when ``url`` returns 200; an empty ProxyHandler keeps *_proxy env vars off 127.0.0.1."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=1.0) as response:
            return int(response.status) == 200
    except (OSError, http.client.HTTPException):  # URLError/HTTPError/resets are OSErrors
        return False


def _endpoints(http_port: int, grpc_port: int, metrics_port: int) -> TritonEndpoints:
    return TritonEndpoints(
        http_url=f"{_LOCALHOST}:{http_port}",
        grpc_url=f"{_LOCALHOST}:{grpc_port}",
        metrics_url=f"http://{_LOCALHOST}:{metrics_port}/metrics",
    )


class LocalTriton:
    """One ``tritonserver`` process serving ``model_repository`` on 127.0.0.1.

    Ports given as 0 are chosen at the first ``start()`` and kept for every restart, so clients can
    reconnect to the same address. The server runs in its own session (a terminal's Ctrl-C reaches the
    gateway, which stops Triton itself) and dies with its parent even on SIGKILL.
    """

    def __init__(
        self,
        model_repository: Path,
        *,
        home: Path | None = None,
        startup_timeout_s: float = 180.0,
        log_path: Path | None = None,
        http_port: int = 0,
        grpc_port: int = 0,
        metrics_port: int = 0,
        extra_args: Sequence[str] = (),
    ) -> None:
        self._repository = Path(model_repository).resolve()
        self._home = (home or default_home()).resolve()
        self._startup_timeout_s = startup_timeout_s
        self._log_path = log_path.resolve() if log_path else None
        self._ports = (http_port, grpc_port, metrics_port)
        self._extra_args = tuple(extra_args)
        self._process: Process | None = None
        self._log_offset = 0

    @property
    def endpoints(self) -> TritonEndpoints:
        if 0 in self._ports:
            raise RuntimeError("ports given as 0 are chosen at the first start(); call start() first")
        return _endpoints(*self._ports)

    @property
    def log_path(self) -> Path:
        """The server's stdout+stderr (appended across restarts); known once ports are fixed."""
        if self._log_path is None:
            return self._home / "logs" / f"tritonserver-{self.endpoints.http_url.rsplit(':', 1)[1]}.log"
        return self._log_path

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> TritonEndpoints:
        """Launch and block until HTTP readiness and the metrics port both answer; no-op when running."""
        if self.is_running():
            return self.endpoints
        self.stop()  # reap a server that died on its own, so a restart begins clean
        prepare_home(self._home)
        if 0 in self._ports:
            self._ports = _fill_free_ports(self._ports)
        began = time.monotonic()
        self._process = self._spawn()
        try:
            self._wait_ready()
        except BaseException:  # timeout, early exit or Ctrl-C: never leave a half-started server
            self.stop()
            raise
        logger.info(
            "tritonserver pid %d ready in %.1f s: %s",
            self._process.pid,
            time.monotonic() - began,
            self.endpoints,
        )
        return self.endpoints

    def kill(self) -> None:
        """SIGKILL the server's session now (a frozen server, SIGSTOP included, answers no SIGTERM) and reap
        it; ``start()`` then begins a fresh one."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        logger.warning("killing tritonserver pid %d", process.pid)
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # its own session: takes the stubs along
        process.wait()

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM (Triton drains in-flight work, unloads models, frees shm), then SIGKILL the session."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            logger.info("stopping tritonserver pid %d", process.pid)
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            logger.warning(
                "tritonserver pid %d ignored SIGTERM for %.0f s; killing it", process.pid, timeout_s
            )
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # its own session: takes the stubs along
            process.wait()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _command(self) -> list[str]:
        http_port, grpc_port, metrics_port = self._ports
        return [
            str(self._home / "bin" / "tritonserver"),
            f"--model-repository={self._repository}",
            f"--backend-directory={self._home / 'backends'}",
            f"--cache-directory={self._home / 'caches'}",
            f"--http-address={_LOCALHOST}",
            f"--http-port={http_port}",
            f"--grpc-address={_LOCALHOST}",
            f"--grpc-port={grpc_port}",
            f"--metrics-address={_LOCALHOST}",
            f"--metrics-port={metrics_port}",
            "--allow-gpu-metrics=false",
            f"--exit-timeout-secs={_EXIT_TIMEOUT_S}",
            "--model-control-mode=none",
            "--disable-auto-complete-config",  # configs must be complete, as the production image expects
            *self._extra_args,
        ]

    def _spawn(self) -> Process:
        command, log_path = self._command(), self.log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        logger.info("starting %s", " ".join(command))
        with log_path.open("ab") as log:  # the child keeps its own descriptor
            self._log_offset = log_path.stat().st_size
            return self._spawn_in_keeper(functools.partial(_popen_server, command, log, self._home))

    def _spawn_in_keeper(self, spawn: Callable[[], Process]) -> Process:
        handoff: queue.Queue[Process | BaseException] = queue.Queue(maxsize=1)
        name = f"tritonserver-keeper-{self._ports[0]}"
        threading.Thread(target=_keep_forking_thread, args=(spawn, handoff), name=name, daemon=True).start()
        result = handoff.get()
        if isinstance(result, BaseException):
            raise result
        return result

    def _wait_ready(self) -> None:
        urls = [f"http://{self.endpoints.http_url}/v2/health/ready", self.endpoints.metrics_url]
        deadline = time.monotonic() + self._startup_timeout_s
        # all() short-circuits: the metrics port (up shortly after ready) is only polled once HTTP is ready.
        while not all(_answers(url) for url in urls):
            if self._process is None or self._process.poll() is not None:
                code = self._process.returncode if self._process else None
                raise TritonStartError(f"tritonserver exited ({code}) before ready:\n{self._log_tail()}")
            if time.monotonic() > deadline:
                raise TritonStartError(
                    f"tritonserver not ready after {self._startup_timeout_s:.0f} s:\n{self._log_tail()}"
                )
            time.sleep(_POLL_INTERVAL_S)

    def _log_tail(self) -> str:
        """This run's error lines, then the end of its log (the file is appended to across restarts).

        The error lines come first because Triton prints wide status tables after them on the way out,
        which would push the actual cause ("failed to load 'x': ...") out of a plain tail.
        """
        with self.log_path.open("rb") as log:
            log.seek(self._log_offset)
            text = log.read().decode(errors="replace")
        errors = [line[:_LOG_LINE_CHARS] for line in text.splitlines() if _GLOG_ERROR.match(line)]
        return "\n".join(["errors:", *errors[-_LOG_ERROR_LINES:], "log tail:", text[-_LOG_TAIL_CHARS:]])


# --------------------------------------------------------------------------------------- CLI


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m service.launcher.triton_local",
        description="Run the bundled tritonserver on 127.0.0.1.",
    )
    parser.add_argument("--model-repository", type=Path, required=True, help="Triton model repository")
    parser.add_argument("--home", type=Path, default=None, help=f"server home (default {default_home()})")
    parser.add_argument("--http-port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--grpc-port", type=int, default=8001, help="0 picks a free port")
    parser.add_argument("--metrics-port", type=int, default=8002, help="0 picks a free port")
    parser.add_argument("--startup-timeout", type=float, default=180.0, help="seconds to wait for readiness")
    parser.add_argument("--log-path", type=Path, default=None, help="server log (default inside home)")
    parser.add_argument(
        "--server-arg",
        action="append",
        default=[],
        help="extra tritonserver flag, e.g. --server-arg=--log-verbose=1",
    )
    return parser.parse_args(argv)


def _serve_until_signalled(triton: LocalTriton) -> int:
    """Wait for SIGINT/SIGTERM (handlers set only now: during start() they abort it) or a server death."""
    stop_requested = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, functools.partial(_request_stop, stop_requested))
    endpoints = triton.endpoints
    print(
        f"Triton ready: http={endpoints.http_url} grpc={endpoints.grpc_url} metrics={endpoints.metrics_url}",
        flush=True,
    )
    while not stop_requested.wait(1.0):
        if not triton.is_running():
            logger.error("tritonserver exited on its own; see %s", triton.log_path)
            return 1
    return 0


def _request_stop(stop_requested: threading.Event, signum: int, frame: FrameType | None) -> None:
    logger.info("received %s; stopping", signal.Signals(signum).name)
    stop_requested.set()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    triton = LocalTriton(
        args.model_repository,
        home=args.home,
        startup_timeout_s=args.startup_timeout,
        log_path=args.log_path,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        extra_args=args.server_arg,
    )
    try:
        with triton:
            return _serve_until_signalled(triton)
    except TritonStartError as exc:
        logger.error("%s", exc)
        return 1
    except KeyboardInterrupt:  # Ctrl-C during start(): start() already stopped the server
        return 130


if __name__ == "__main__":
    sys.exit(main())
