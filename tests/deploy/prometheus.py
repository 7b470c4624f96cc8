"""A real Prometheus server on 127.0.0.1 for one test: free port, temporary storage, bounded waits.

The server gets SIGTERM if the test process dies (``PR_SET_PDEATHSIG``) and is stopped in ``stop()``
(SIGTERM, then SIGKILL), so it never outlives the test.
"""

from __future__ import annotations

import ctypes
import functools
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_POLL_S = 0.2


class PrometheusError(RuntimeError):
    """The server exited, or an API call did not succeed; carries the tail of the server log."""


def _die_with_parent(prctl: Callable[..., int], parent_pid: int) -> None:
    """Between fork and exec: SIGTERM when the parent dies; exit at once if it already has."""
    prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent_pid:
        os._exit(1)


class PrometheusServer:
    """``prometheus`` with ``config`` on ``127.0.0.1:port``; use as a context manager."""

    def __init__(self, binary: Path, config: Path, storage: Path, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = storage.parent / "prometheus.log"
        self._command = [
            str(binary),
            f"--config.file={config}",
            f"--storage.tsdb.path={storage}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ]
        self._process: subprocess.Popen[bytes] | None = None
        self._http = httpx.Client(base_url=self.url, timeout=5.0, trust_env=False)  # no proxy for loopback

    def __enter__(self) -> Self:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before fork: no dlopen in the child
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self._command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=functools.partial(_die_with_parent, prctl, os.getpid()),
            )
        try:
            self.wait_for(lambda: self._http.get("/-/ready").status_code == 200, 30.0, "ready")
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> None:
        process, self._process = self._process, None
        self._http.close()
        if process is None:
            return
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(15)

    def wait_for(self, condition: Callable[[], bool], timeout_s: float, what: str) -> None:
        """Poll ``condition`` until true; fail after ``timeout_s`` or if the server has exited."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self._process is None or self._process.poll() is not None:
                raise PrometheusError(f"prometheus exited while waiting for {what}:\n{self.log_tail()}")
            try:
                if condition():
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise PrometheusError(f"prometheus: no {what} after {timeout_s:.0f} s:\n{self.log_tail()}")
            time.sleep(_POLL_S)

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path>; the ``data`` member, or PrometheusError unless status is success."""
        response = self._http.get(f"/api/v1/{path}", params=params)
        body = response.json()
        if response.status_code != 200 or body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: HTTP {response.status_code} {body}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; the result vector (empty when no series match)."""
        data = self.api("query", query=expr)
        result: list[dict[str, Any]] = data["result"]
        return result

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""
