"""A real Redis server for tests and benchmarks: Debian's redis-server (scripts/install-redis.sh) on a free
loopback port, its files in a folder of the caller's, nothing persisted, stopped on the way out."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from devstack.stack import free_port

START_WITHIN_S = 20.0


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found is None:
        raise RuntimeError("redis-server is not installed: run scripts/install-redis.sh (as root)")
    return found


def wait_for_redis(url: str, process: subprocess.Popen[bytes], within_s: float) -> None:
    deadline = time.monotonic() + within_s
    client = redis.Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=1.0)
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {process.returncode}")
            try:
                if client.ping():
                    return
            except (OSError, redis.ConnectionError):
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not answer within {within_s} s")
    finally:
        client.close()


@contextmanager
def redis_server(folder: Path) -> Iterator[str]:
    """Yields the server's URL (redis://127.0.0.1:<port>/0); its log is ``folder/redis.log``."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    command = [redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder)]
    command += ["--save", "", "--appendonly", "no", "--logfile", str(folder / "redis.log")]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        wait_for_redis(url, process, START_WITHIN_S)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
