"""The restricted unpickler: tensors and module records back, nothing from the file run, one-line errors."""

from __future__ import annotations

import io
import os
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from fermodels.importing.reader import (
    CorruptCheckpointError,
    InertRecord,
    NotACheckpointError,
    UnsafeCheckpointError,
    module_state_dict,
    read_checkpoint_file,
)


def rewrite_pickle(path: Path, replacements: dict[bytes, bytes]) -> None:
    """Edit the global names inside a torch zip checkpoint's data.pkl (protocol 2 writes them as text),
    which is how a file saved under other module paths (older timm, a script's ``__main__``) looks."""
    with zipfile.ZipFile(path) as archive:
        members = [(info.filename, archive.read(info)) for info in archive.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, data in members:
            if name.endswith("/data.pkl"):
                for old, new in replacements.items():
                    assert old in data, old
                    data = data.replace(old, new)
            archive.writestr(name, data)


class Recorder:
    """Stands in for a training script's logger class pickled inside a checkpoint."""

    def __init__(self) -> None:
        self.epochs = [1, 2]
        self.best = torch.tensor([0.5])
        self.losses = np.zeros((3, 2))  # POSTER++'s RecorderMeter keeps numpy arrays


class RunsCode:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (self.command,))


class Evaluates:
    def __reduce__(self) -> tuple[Any, ...]:
        return (eval, ("1 + 1",))


def small_module() -> nn.Module:
    module = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4, 2))
    module[1].register_buffer("scratch", torch.ones(1), persistent=False)
    return module.eval()


def test_a_state_dict_reads_back_exactly(tmp_path: Path) -> None:
    state = OrderedDict(a=torch.randn(3, 4), b=torch.arange(5), c=torch.randn(4, 3).t(), d=torch.zeros(0))
    torch.save(state, tmp_path / "s.pt")
    loaded = read_checkpoint_file(tmp_path / "s.pt")
    assert list(loaded) == list(state)
    for key, value in state.items():
        assert torch.equal(loaded[key], value) and loaded[key].dtype == value.dtype


def test_a_whole_module_pickle_becomes_its_state_dict(tmp_path: Path) -> None:
    module = small_module()
    torch.save(module, tmp_path / "m.pt")
    root = read_checkpoint_file(tmp_path / "m.pt")
    assert isinstance(root, InertRecord) and root.global_name == "torch.nn.modules.container.Sequential"
    flat = module_state_dict(root)
    expected = module.state_dict()
    assert list(flat) == list(expected)  # the non-persistent buffer is left out, as state_dict() does
    assert all(torch.equal(flat[key], expected[key]) for key in expected)


def test_os_system_is_refused_and_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    torch.save({"x": RunsCode(f"touch {marker}")}, tmp_path / "evil.pt")
    with pytest.raises(UnsafeCheckpointError, match=r"references (posix|os)\.system") as caught:
        read_checkpoint_file(tmp_path / "evil.pt")
    assert not marker.exists()
    assert "\n" not in str(caught.value)


def test_builtins_eval_is_refused(tmp_path: Path) -> None:
    torch.save([Evaluates()], tmp_path / "eval.pt")
    with pytest.raises(UnsafeCheckpointError, match=r"builtins\.eval"):
        read_checkpoint_file(tmp_path / "eval.pt")


def test_a_main_class_is_refused_unless_allowed_as_inert(tmp_path: Path) -> None:
    path = tmp_path / "train.pt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "recorder1": Recorder()}, path)
    rewrite_pickle(path, {f"{__name__}\nRecorder\n".encode(): b"__main__\nRecorderMeter\n"})
    with pytest.raises(UnsafeCheckpointError, match=r"__main__\.RecorderMeter"):
        read_checkpoint_file(path)
    with pytest.raises(UnsafeCheckpointError, match=r"numpy"):
        read_checkpoint_file(path, allow_inert={"__main__.RecorderMeter"})
    loaded = read_checkpoint_file(path, allow_inert={"__main__.RecorderMeter", "numpy."})
    assert torch.equal(loaded["state_dict"]["w"], torch.ones(2))
    recorder = loaded["recorder1"]
    assert isinstance(recorder, InertRecord) and recorder.attributes["epochs"] == [1, 2]
    assert isinstance(recorder.attributes["losses"], InertRecord)  # rebuilt by nothing of numpy


def test_a_truncated_file_is_reported(tmp_path: Path) -> None:
    torch.save(small_module().state_dict(), tmp_path / "full.pt")
    data = (tmp_path / "full.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptCheckpointError, match="truncated or corrupt"):
        read_checkpoint_file(tmp_path / "cut.pt")


def test_a_damaged_storage_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "bad.pt"
    torch.save({"w": torch.zeros(4096)}, path)
    data = bytearray(path.read_bytes())
    start = data.index(b"\x00" * 4096)  # inside the tensor's bytes: the member's CRC no longer matches
    data[start + 100 : start + 108] = b"garbage!"
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpointError, match="damaged"):
        read_checkpoint_file(path)


def test_other_files_are_not_checkpoints(tmp_path: Path) -> None:
    png = io.BytesIO()
    Image.new("RGB", (4, 4)).save(png, format="PNG")
    (tmp_path / "face.png").write_bytes(png.getvalue())
    with pytest.raises(NotACheckpointError, match="not a torch checkpoint"):
        read_checkpoint_file(tmp_path / "face.png")
    torch.save({"w": torch.ones(1)}, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    with pytest.raises(NotACheckpointError, match="legacy"):
        read_checkpoint_file(tmp_path / "legacy.pt")
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(NotACheckpointError, match=r"data\.pkl"):
        read_checkpoint_file(tmp_path / "other.zip")
    with pytest.raises(NotACheckpointError, match="does not exist"):
        read_checkpoint_file(tmp_path / "missing.pt")
