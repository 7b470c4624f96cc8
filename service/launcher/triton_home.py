"""The writable *home* a local Triton runs from, prepared from the ``nvidia-pytriton`` wheel.

The wheel ships a complete ``tritonserver`` (Triton 2.51) with only the python backend. The home gets a
copy of it, the python-backend stub for this interpreter, and ``backends/pytorch/model.py`` (the
TorchScript runner), so Triton serves ``platform: "pytorch_libtorch"`` models through the python backend.
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import shutil
import sys
import sysconfig
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

_RUNNER = Path(__file__).resolve().parent / "triton_backend" / "pytorch" / "model.py"
_STUB = "triton_python_backend_stub"


class TritonStartError(RuntimeError):
    """The server exited or did not become ready in time; the message carries the tail of its log."""


def _wheel_server_dir() -> Path:
    # find_spec, not import: pytriton's own Python API (and its dependencies) is not installed or needed.
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise TritonStartError("nvidia-pytriton is not installed (pip install --no-deps nvidia-pytriton)")
    return Path(next(iter(spec.submodule_search_locations))) / "tritonserver"


def _wheel_libs_dir() -> Path:
    """The wheel's vendored shared libraries (auditwheel puts them next to the package)."""
    return _wheel_server_dir().parent.parent / "nvidia_pytriton.libs"


def _copy_atomic(source: Path, target: Path) -> None:
    """Copy then rename: a server already running from this home keeps its old inode, never a torn file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    shutil.copy2(source, partial)
    os.replace(partial, target)


@contextmanager
def _home_lock(home: Path) -> Iterator[None]:
    """Serialise preparation across processes (parallel test sessions share the default home)."""
    home.mkdir(parents=True, exist_ok=True)
    with (home / ".prepare.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _install_server(home: Path) -> None:
    """Copy the wheel's server tree once per wheel version (29 MB); the marker is written last."""
    marker = home / ".nvidia-pytriton-version"
    version = metadata.version("nvidia-pytriton")
    if marker.is_file() and marker.read_text() == version:
        return
    ignore = shutil.ignore_patterns("__pycache__", "python_backend_stubs")
    shutil.copytree(_wheel_server_dir(), home, dirs_exist_ok=True, ignore=ignore)
    marker.write_text(version)


def _stub_source() -> Path:
    """The python-backend stub built for this interpreter's X.Y (it embeds libpython X.Y)."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = _wheel_server_dir() / "python_backend_stubs" / version / _STUB
    if not stub.is_file():
        raise TritonStartError(f"nvidia-pytriton has no python-backend stub for Python {version}")
    return stub


def prepare_home(home: Path) -> Path:
    """Make ``home`` a runnable Triton home; idempotent, and re-copies the runner so edits take effect."""
    home = home.resolve()
    with _home_lock(home):
        _install_server(home)
        _copy_atomic(_stub_source(), home / "backends" / "python" / _STUB)
        _copy_atomic(_RUNNER, home / "backends" / "pytorch" / "model.py")
    return home


def server_env() -> dict[str, str]:
    env = dict(os.environ)
    # The stub takes sys.prefix (hence torch, numpy<2) from the first python3 on PATH: the venv's.
    env["PATH"] = os.pathsep.join(filter(None, [str(Path(sys.executable).parent), env.get("PATH")]))
    # LIBDIR first, or the stub may pick the distro's libpython against this interpreter's stdlib.
    libdirs = [sysconfig.get_config_var("LIBDIR"), str(_wheel_libs_dir()), env.get("LD_LIBRARY_PATH")]
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, libdirs))
    return env
