"""The restricted reader on archives written by hand: every storage and tensor check, the plain values a
checkpoint may hold, module and TorchScript trees, and the training-checkpoint layout.

The archives are torch's zip layout (``<root>/data.pkl``, ``<root>/data/<key>``, ``<root>/byteorder``)
built here with the standard pickler, so a test can write what torch.save never would: a tensor reaching
past its storage, a storage of the wrong length, a big-endian file, an encoding other than latin1.
"""

from __future__ import annotations

import codecs
import copyreg
import io
import pickle
import struct
import sys
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from fermodels.importing.reader import (
    CorruptCheckpointError,
    InertRecord,
    NotACheckpointError,
    UnsafeCheckpointError,
    is_torchscript_archive,
    module_state_dict,
    read_checkpoint_file,
    tensor_mapping,
    torchscript_state_dict,
    training_state_dict,
)

HERE = __name__


class Storage:
    """Pickled as torch.save pickles a storage: a persistent id ("storage", type, key, location, numel)."""

    def __init__(self, kind: Any, key: str, numel: int) -> None:
        self.kind, self.key, self.numel = kind, key, numel


class Call:
    """Pickled as a call ``func(*args)``: how a checkpoint asks the unpickler to build a value."""

    def __init__(self, func: Any, *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.func, self.args)


class Pid:
    """Pickled as the persistent id it carries, whatever it is."""

    def __init__(self, pid: Any) -> None:
        self.pid = pid


class _Pickler(pickle.Pickler):
    """torch.save's pickling by hand: storages as persistent ids, a tensor as ``_rebuild_tensor_v2`` of its
    own float32 storage (collected in ``storages``)."""

    def __init__(self, file: io.BytesIO, protocol: int) -> None:
        super().__init__(file, protocol=protocol)
        self.storages: dict[str, bytes] = {}

    def reducer_override(self, obj: Any) -> Any:
        if not isinstance(obj, torch.Tensor):
            return NotImplemented
        key, data = f"t{len(self.storages)}", obj.detach().to(torch.float32).contiguous()
        self.storages[key] = data.numpy().tobytes()
        storage = Storage(torch.FloatStorage, key, data.numel())
        return tensor(storage, 0, tuple(data.shape), data.stride()).__reduce__()

    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, Storage):
            return ("storage", obj.kind, obj.key, "cpu", obj.numel)
        if isinstance(obj, Pid):
            return obj.pid
        return None


def write_archive(
    path: Path,
    obj: Any,
    storages: dict[str, bytes] | None = None,
    *,
    byteorder: bytes | None = b"little",
    protocol: int = 2,
) -> Path:
    buffer = io.BytesIO()
    pickler = _Pickler(buffer, protocol=protocol)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 5000))  # the pickler recurses into each of 200 nested modules
    try:
        pickler.dump(obj)
    finally:
        sys.setrecursionlimit(limit)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", buffer.getvalue())
        if byteorder is not None:
            archive.writestr("archive/byteorder", byteorder)
        for key, raw in {**pickler.storages, **(storages or {})}.items():
            archive.writestr(f"archive/data/{key}", raw)
    return path


def floats(*values: float) -> bytes:
    return struct.pack(f"<{len(values)}f", *values)


def tensor(storage: Any, offset: int, size: tuple[int, ...], stride: tuple[int, ...]) -> Call:
    return Call(torch._utils._rebuild_tensor_v2, storage, offset, size, stride, False, OrderedDict())


SIX = floats(0, 1, 2, 3, 4, 5)


def read_view(tmp_path: Path, offset: int, size: tuple[int, ...], stride: tuple[int, ...]) -> Any:
    view = tensor(Storage(torch.FloatStorage, "0", 6), offset, size, stride)
    return read_checkpoint_file(write_archive(tmp_path / "v.pt", {"w": view}, {"0": SIX}))["w"]


# ------------------------------------------------------------------------------------- tensors, storages


def test_a_tensor_is_the_strided_view_of_its_storage_it_declares(tmp_path: Path) -> None:
    # element [i, j] = storage[1 + i + 2 j]
    assert read_view(tmp_path, 1, (2, 2), (1, 2)).tolist() == [[1.0, 3.0], [2.0, 4.0]]
    # The last element may be the storage's last one ...
    assert read_view(tmp_path, 2, (2, 2), (1, 2)).tolist() == [[2.0, 4.0], [3.0, 5.0]]
    # ... and an empty tensor reads nothing, wherever it starts.
    assert read_view(tmp_path, 6, (0, 3), (3, 1)).shape == (0, 3)
    assert read_view(tmp_path, 5, (3, 0), (1, 1)).shape == (3, 0)
    assert read_view(tmp_path, 0, (), ()).item() == 0.0


@pytest.mark.parametrize(
    ("offset", "size", "stride", "message"),
    [
        (3, (2, 2), (1, 2), "reaches past its storage"),  # last element storage[6] of 6
        (7, (0,), (1,), "reaches past its storage"),  # empty, but starting past the end
        (0, (7,), (1,), "reaches past its storage"),
        (0, (2,), (1, 1), "invalid size/stride"),
        (0, (2, 2), (2,), "invalid size/stride"),
        (0, (2,), (-1,), "invalid size/stride"),
        (0, (-1,), (1,), "invalid size/stride"),
        (-1, (2,), (1,), "invalid size/stride"),
    ],
)
def test_a_tensor_outside_its_storage_is_corrupt(
    tmp_path: Path, offset: int, size: tuple[int, ...], stride: tuple[int, ...], message: str
) -> None:
    with pytest.raises(CorruptCheckpointError, match=message):
        read_view(tmp_path, offset, size, stride)


def test_a_tensor_must_rest_on_a_storage(tmp_path: Path) -> None:
    path = write_archive(tmp_path / "t.pt", {"w": tensor(12, 0, (1,), (1,))})
    with pytest.raises(CorruptCheckpointError, match=r"^a tensor refers to something that is not a storage$"):
        read_checkpoint_file(path)


@pytest.mark.parametrize(
    ("numel", "raw", "message"),
    [
        (6, floats(0, 1, 2, 3, 4), "holds 20 bytes, its tensor needs 6 x 4"),
        (5, SIX, "holds 24 bytes, its tensor needs 5 x 4"),
        (-6, SIX, "its tensor needs -6 x 4"),
    ],
)
def test_a_storage_must_hold_exactly_its_declared_bytes(
    tmp_path: Path, numel: int, raw: bytes, message: str
) -> None:
    view = tensor(Storage(torch.FloatStorage, "0", numel), 0, (1,), (1,))
    with pytest.raises(CorruptCheckpointError, match=message):
        read_checkpoint_file(write_archive(tmp_path / "s.pt", [view], {"0": raw}))


def test_an_empty_storage_reads_as_an_empty_tensor(tmp_path: Path) -> None:
    view = tensor(Storage(torch.LongStorage, "0", 0), 0, (0,), (1,))
    loaded = read_checkpoint_file(write_archive(tmp_path / "e.pt", [view], {"0": b""}))[0]
    assert loaded.shape == (0,) and loaded.dtype == torch.int64
    beyond = tensor(Storage(torch.LongStorage, "0", 0), 0, (1,), (1,))  # one element of none
    with pytest.raises(CorruptCheckpointError, match=r"reaches past its storage \(0\)"):
        read_checkpoint_file(write_archive(tmp_path / "e1.pt", [beyond], {"0": b""}))


def test_views_of_one_storage_share_it(tmp_path: Path) -> None:
    storage = Storage(torch.FloatStorage, "0", 6)
    views = [tensor(storage, 0, (3,), (1,)), tensor(storage, 3, (3,), (1,))]
    first, second = read_checkpoint_file(write_archive(tmp_path / "two.pt", views, {"0": SIX}))
    assert first.tolist() == [0.0, 1.0, 2.0] and second.tolist() == [3.0, 4.0, 5.0]
    first[2] = 9.0  # one storage, read once: as torch.load gives it
    assert second.as_strided((1,), (1,), 2).item() == 9.0


@pytest.mark.parametrize(
    ("pid", "message"),
    [
        (("file", "0"), r"^unknown persistent id \"\('file', '0'\)\" in the pickle$"),
        (("storage", torch.FloatStorage, "0", "cpu"), "unknown persistent id"),
        (["storage", torch.FloatStorage, "0", "cpu", 6], "unknown persistent id"),
        (("storage", "FloatStorage", "0", "cpu", 6), "storage of unknown type"),
    ],
)
def test_a_persistent_id_must_be_a_typed_storage(tmp_path: Path, pid: Any, message: str) -> None:
    path = write_archive(tmp_path / "p.pt", [Pid(pid)], {"0": SIX})
    with pytest.raises(CorruptCheckpointError, match=message):
        read_checkpoint_file(path)


def test_a_missing_storage_member_is_named(tmp_path: Path) -> None:
    view = tensor(Storage(torch.FloatStorage, "7", 6), 0, (1,), (1,))
    with pytest.raises(CorruptCheckpointError, match=r"^m\.pt: the archive lacks archive/data/7$"):
        read_checkpoint_file(write_archive(tmp_path / "m.pt", [view], {"0": SIX}))


def test_only_little_endian_archives_are_read(tmp_path: Path) -> None:
    view = tensor(Storage(torch.FloatStorage, "0", 6), 0, (6,), (1,))
    with pytest.raises(CorruptCheckpointError, match="big-endian"):
        read_checkpoint_file(write_archive(tmp_path / "big.pt", [view], {"0": SIX}, byteorder=b"big"))
    # Older archives carry no byteorder record: little-endian.
    old = read_checkpoint_file(write_archive(tmp_path / "old.pt", [view], {"0": SIX}, byteorder=None))
    assert old[0].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]


@pytest.mark.parametrize(
    "dtype",
    [
        torch.float64,
        torch.float32,
        torch.float16,
        torch.bfloat16,
        torch.int64,
        torch.int32,
        torch.int16,
        torch.int8,
        torch.uint8,
        torch.bool,
    ],
)
def test_every_storage_type_reads_back_with_its_dtype(tmp_path: Path, dtype: torch.dtype) -> None:
    values = torch.tensor([0, 1, 1, 0, 1], dtype=dtype)
    torch.save({"w": values, "dtype": dtype}, tmp_path / "d.pt")
    loaded = read_checkpoint_file(tmp_path / "d.pt")
    assert loaded["w"].dtype == dtype and torch.equal(loaded["w"], values) and loaded["dtype"] == dtype


# ---------------------------------------------------------------------------------------- plain values


def test_the_plain_values_of_a_protocol_2_checkpoint_read_back(tmp_path: Path) -> None:
    values = {
        "set": {1, 2},
        "frozen": frozenset({3}),
        "bytes": b"\x00\xff\x80",
        "size": torch.Size([2, 3]),
        "device": torch.device("cpu"),
        "ordered": OrderedDict(b=1, a=2),
    }
    torch.save(values, tmp_path / "v.pt", pickle_protocol=2)
    loaded = read_checkpoint_file(tmp_path / "v.pt")
    assert loaded["set"] == {1, 2} and loaded["frozen"] == frozenset({3})
    assert loaded["bytes"] == b"\x00\xff\x80" and loaded["size"] == (2, 3)
    assert loaded["device"] == "cpu" and list(loaded["ordered"]) == ["b", "a"]


def test_a_device_without_arguments_is_the_cpu(tmp_path: Path) -> None:
    path = write_archive(tmp_path / "d.pt", [Call(torch.device, "cuda:1"), Call(torch.device)])
    assert read_checkpoint_file(path) == ["cuda:1", "cpu"]


def test_codecs_encode_serves_latin1_bytes_only(tmp_path: Path) -> None:
    good = write_archive(
        tmp_path / "l.pt", [Call(codecs.encode, "\xff", "latin-1"), Call(codecs.encode, "a")]
    )
    assert read_checkpoint_file(good) == [b"\xff", b"a"]
    for encoding in ("rot13", "utf-8", "LATIN1"):
        path = write_archive(tmp_path / "r.pt", [Call(codecs.encode, "abc", encoding)])
        with pytest.raises(UnsafeCheckpointError, match=rf"_codecs\.encode with '{encoding}'"):
            read_checkpoint_file(path)
    with pytest.raises(UnsafeCheckpointError, match=r"_codecs\.encode"):
        read_checkpoint_file(write_archive(tmp_path / "n.pt", [Call(codecs.encode, 12, "latin1")]))


class Plain:
    def __init__(self) -> None:
        self.epochs = [1, 2]
        self.name = "run"


class Slotted:
    __slots__ = ("__dict__", "best")

    def __init__(self) -> None:
        self.best = 0.5
        self.epoch = 3


class Odd:
    def __getstate__(self) -> list[int]:
        return [1, 2]

    def __setstate__(self, state: list[int]) -> None:
        pass


def test_allowed_classes_become_records_of_their_state(tmp_path: Path) -> None:
    allow = {f"{HERE}.Plain", f"{HERE}.Slotted", f"{HERE}.Odd"}
    path = write_archive(tmp_path / "r.pt", [Plain(), Slotted(), Odd(), Plain()])
    plain, slotted, odd, again = read_checkpoint_file(path, allow_inert=allow)
    assert isinstance(plain, InertRecord) and plain.global_name == f"{HERE}.Plain"
    assert plain.attributes == {"epochs": [1, 2], "name": "run"} and repr(plain) == f"<inert {HERE}.Plain>"
    assert slotted.attributes == {"best": 0.5, "epoch": 3}  # __dict__ and slots merged
    assert odd.attributes == {}  # a state that is not a dict
    assert type(again) is type(plain) and again.attributes == plain.attributes


def test_protocol_1_objects_are_rebuilt_only_as_records(tmp_path: Path) -> None:
    path = write_archive(tmp_path / "p1.pt", [Plain()], protocol=1)
    (record,) = read_checkpoint_file(path, allow_inert={f"{HERE}.Plain"})
    assert isinstance(record, InertRecord) and record.attributes["name"] == "run"
    sneaky = write_archive(tmp_path / "s.pt", [Call(copyreg._reconstructor, OrderedDict, object, None)])
    with pytest.raises(UnsafeCheckpointError, match=r"copyreg\._reconstructor of"):
        read_checkpoint_file(sneaky)


def test_an_allowed_prefix_must_end_with_a_dot(tmp_path: Path) -> None:
    path = write_archive(tmp_path / "r.pt", [Plain()])
    package = HERE.rsplit(".", 1)[0]  # tests.unit
    assert isinstance(read_checkpoint_file(path, allow_inert={f"{package}."})[0], InertRecord)
    for refused in ({package}, {f"{HERE}.Pla"}, {f"{HERE}.Plain."}):
        with pytest.raises(UnsafeCheckpointError, match=r"Plain, which is not allowed"):
            read_checkpoint_file(path, allow_inert=refused)


def test_torch_names_outside_the_value_table_are_refused(tmp_path: Path) -> None:
    for value in (torch.load, torch.Tensor.add_):
        with pytest.raises(UnsafeCheckpointError, match="not allowed"):
            read_checkpoint_file(write_archive(tmp_path / "t.pt", [Call(value, 1)]))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x80\x02K\x01", "the pickle does not read back"),  # no STOP
        (b"not a pickle", "the pickle does not read back"),
        (b"\x80\x02]q\x00h\x05a.", "the pickle does not read back"),  # a memo key never stored
    ],
)
def test_a_broken_pickle_is_corrupt_in_one_line(tmp_path: Path, data: bytes, message: str) -> None:
    with zipfile.ZipFile(tmp_path / "b.pt", "w") as archive:
        archive.writestr("archive/data.pkl", data)
    with pytest.raises(CorruptCheckpointError, match=message) as caught:
        read_checkpoint_file(tmp_path / "b.pt")
    assert "\n" not in str(caught.value) and str(caught.value).startswith("b.pt: ")


def test_an_archive_needs_exactly_one_top_level_data_pkl(tmp_path: Path) -> None:
    for names in (["a/data.pkl", "b/data.pkl"], ["a/b/data.pkl"], ["data.pkl"]):
        with zipfile.ZipFile(tmp_path / "z.pt", "w") as archive:
            for name in names:
                archive.writestr(name, pickle.dumps([1], protocol=2))
        with pytest.raises(NotACheckpointError, match=r"no <name>/data\.pkl"):
            read_checkpoint_file(tmp_path / "z.pt")


def test_files_that_are_not_zip_checkpoints(tmp_path: Path) -> None:
    for protocol in (2, 3, 4, 5):
        (tmp_path / "p.pkl").write_bytes(pickle.dumps({"w": 1}, protocol=protocol))
        with pytest.raises(NotACheckpointError, match=r"legacy .* or plain pickle"):
            read_checkpoint_file(tmp_path / "p.pkl")
    (tmp_path / "t.txt").write_bytes(b"hello world")
    with pytest.raises(NotACheckpointError, match=r"not a torch checkpoint \(it starts with b'hello wo'\)"):
        read_checkpoint_file(tmp_path / "t.txt")
    with pytest.raises(NotACheckpointError, match="not a file"):
        read_checkpoint_file(tmp_path)
    (tmp_path / "fake.zip").write_bytes(b"PK\x03\x04 but nothing else")
    with pytest.raises(CorruptCheckpointError, match=r"fake\.zip is a truncated or corrupt zip"):
        read_checkpoint_file(tmp_path / "fake.zip")


# ----------------------------------------------------------------------------------- module records


class FakeModule:
    """A pickled module as nn.Module pickles one: _parameters, _buffers, _modules in its __dict__."""

    def __init__(self, parameters: Any, buffers: Any = None, modules: Any = None, skip: Any = None) -> None:
        self._parameters = parameters
        self._buffers = buffers if buffers is not None else {}
        self._modules = modules if modules is not None else {}
        if skip is not None:
            self._non_persistent_buffers_set = skip


def records(tmp_path: Path, value: Any) -> Any:
    return read_checkpoint_file(write_archive(tmp_path / "m.pt", value), allow_inert={f"{HERE}.FakeModule"})


def test_a_module_tree_walks_to_dotted_keys_skipping_none_and_non_persistent(tmp_path: Path) -> None:
    # A None parameter, a non-persistent buffer and an absent child come first: what follows them counts.
    parameters = {"bias": None, "weight": torch.ones(2)}
    leaf = FakeModule(parameters, {"tmp": torch.ones(1), "mean": torch.zeros(2)}, skip={"tmp"})
    body = FakeModule({}, None, {"0": leaf})
    root = FakeModule({"scale": torch.ones(1)}, None, {"gap": None, "body": body})
    flat = module_state_dict(records(tmp_path, root))
    assert list(flat) == ["scale", "body.0.weight", "body.0.mean"]


@pytest.mark.parametrize(
    ("module", "message"),
    [
        (FakeModule([torch.ones(1)]), r"FakeModule\._parameters is not a mapping"),
        (FakeModule({}, [torch.ones(1)]), r"FakeModule\._buffers is not a mapping"),
        (
            FakeModule({}, None, {"head": FakeModule({"w": [1.0]})}),
            r"head\.w of .*FakeModule is not a tensor",
        ),
        (FakeModule({}, {"b": 2}), r"^b of .*FakeModule is not a tensor"),
        (FakeModule({}, None, {"head": {"w": torch.ones(1)}}), r"submodule head is not a pickled module"),
    ],
)
def test_a_malformed_module_tree_is_corrupt(tmp_path: Path, module: FakeModule, message: str) -> None:
    with pytest.raises(CorruptCheckpointError, match=message):
        module_state_dict(records(tmp_path, module))


def test_only_a_module_record_has_a_module_state_dict(tmp_path: Path) -> None:
    with pytest.raises(NotACheckpointError, match="holds a dict, not a pickled torch module"):
        module_state_dict({"w": torch.ones(1)})
    torch.save(nn.Linear(2, 2).state_dict(), tmp_path / "s.pt")
    with pytest.raises(NotACheckpointError, match="holds a OrderedDict"):
        module_state_dict(read_checkpoint_file(tmp_path / "s.pt"))
    plain = read_checkpoint_file(write_archive(tmp_path / "p.pt", Plain()), allow_inert={f"{HERE}.Plain"})
    with pytest.raises(NotACheckpointError, match=rf"holds a {HERE}\.Plain, not"):
        module_state_dict(plain)


def nested(depth: int) -> FakeModule:
    module = FakeModule({"w": torch.ones(1)})
    for _ in range(depth):
        module = FakeModule({}, None, {"m": module})
    return module


def test_a_module_tree_deeper_than_any_network_is_refused(tmp_path: Path) -> None:
    flat = module_state_dict(records(tmp_path, nested(200)))  # the limit itself is read
    assert list(flat) == ["m." * 200 + "w"]
    with pytest.raises(
        CorruptCheckpointError, match=r"^the pickled module tree is deeper than any real network$"
    ):
        module_state_dict(records(tmp_path, nested(201)))


# ------------------------------------------------------------------------------------------ TorchScript


def scripted(tmp_path: Path, module: nn.Module) -> Path:
    path = tmp_path / "script.pt"
    torch.jit.save(torch.jit.script(module), path)
    return path


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_a_torchscript_archive_gives_its_weights_under_their_keys(tmp_path: Path) -> None:
    module = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Sequential(nn.BatchNorm1d(3))).eval()
    path = scripted(tmp_path, module)
    assert is_torchscript_archive(path)
    flat = torchscript_state_dict(path)
    expected = module.state_dict()
    assert set(flat) == set(expected)
    assert all(torch.equal(flat[key], expected[key]) for key in expected)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_torchscript_archives_without_a_module_or_weights_are_refused(tmp_path: Path) -> None:
    with pytest.raises(NotACheckpointError, match=r"script\.pt is a TorchScript module without weights"):
        torchscript_state_dict(scripted(tmp_path, nn.ReLU()))
    torch.save({"w": torch.ones(1)}, tmp_path / "plain.pt")
    assert not is_torchscript_archive(tmp_path / "plain.pt")
    with pytest.raises(NotACheckpointError, match=r"plain\.pt is a zip archive but holds no TorchScript"):
        torchscript_state_dict(tmp_path / "plain.pt")
    torch.save(nn.Linear(1, 1), tmp_path / "pickled.pt")  # a record, but not a __torch__ one
    with pytest.raises(NotACheckpointError, match="holds no TorchScript"):
        torchscript_state_dict(tmp_path / "pickled.pt")


def test_a_torchscript_archive_is_told_by_its_code_folder_or_constants(tmp_path: Path) -> None:
    for names, expected in (
        (["m/data.pkl", "m/code/__torch__.py"], True),
        (["m/data.pkl", "m/constants.pkl"], True),
        (["m/data.pkl", "m/data/0"], False),
        (["m/data.pkl", "m/codex/a.py", "code/a.py"], False),
    ):
        with zipfile.ZipFile(tmp_path / "a.zip", "w") as archive:
            for name in names:
                archive.writestr(name, b"")
        assert is_torchscript_archive(tmp_path / "a.zip") is expected, names
    (tmp_path / "x.txt").write_bytes(b"not a zip")
    assert not is_torchscript_archive(tmp_path / "x.txt")
    assert not is_torchscript_archive(tmp_path / "missing.pt")


class Script:
    """Stands in for a scripted submodule: pickled under a ``__torch__.`` name (set below)."""

    def __init__(self, **attributes: Any) -> None:
        self.__dict__.update(attributes)


def script_tree(tmp_path: Path, root: Script) -> Path:
    path = write_archive(tmp_path / "s.pt", root)
    name = f"{HERE}\nScript\n".encode()
    with zipfile.ZipFile(path) as archive:
        members = [(info.filename, archive.read(info)) for info in archive.infolist()]
    with zipfile.ZipFile(path, "w") as archive:
        for member, data in members:
            archive.writestr(member, data.replace(name, b"__torch__.m\nScript\n"))
        archive.writestr("archive/code/__torch__/m.py", b"")
    return path


def test_a_script_tree_keeps_tensors_and_script_children_only(tmp_path: Path) -> None:
    child = Script(weight=torch.ones(2), training=False, note="x")
    root = Script(scale=torch.zeros(1), child=child, other=Plain(), gone=None)
    path = script_tree(tmp_path, root)
    with pytest.raises(UnsafeCheckpointError):
        torchscript_state_dict(path)  # Plain is no __torch__ module and not allowed
    root = Script(scale=torch.zeros(1), child=child, values=[torch.ones(3)])
    assert list(torchscript_state_dict(script_tree(tmp_path, root))) == ["scale", "child.weight"]


def test_a_script_tree_deeper_than_any_network_is_refused(tmp_path: Path) -> None:
    def chain(depth: int) -> Script:
        module = Script(w=torch.ones(1))
        for _ in range(depth):
            module = Script(m=module)
        return module

    assert list(torchscript_state_dict(script_tree(tmp_path, chain(200)))) == ["m." * 200 + "w"]
    with pytest.raises(
        CorruptCheckpointError, match=r"^the scripted module tree is deeper than any real network$"
    ):
        torchscript_state_dict(script_tree(tmp_path, chain(201)))


# ------------------------------------------------------------------------------- training checkpoints


def test_a_training_checkpoint_gives_the_state_dict_under_its_key_without_module(tmp_path: Path) -> None:
    weights = {"module.head.weight": torch.ones(2), "body.module.w": torch.zeros(1)}
    torch.save({"state_dict": weights, "epoch": 3}, tmp_path / "t.pt")
    state = training_state_dict(tmp_path / "t.pt", "state_dict", "POSTER")
    assert list(state) == ["head.weight", "body.module.w"]  # only the leading DataParallel prefix goes
    torch.save(weights, tmp_path / "bare.pt")
    assert list(training_state_dict(tmp_path / "bare.pt", "state_dict", "POSTER")) == list(state)


def test_a_training_checkpoint_without_a_state_dict_says_what_was_expected(tmp_path: Path) -> None:
    torch.save({"epoch": 3, "model": {"w": torch.ones(1)}}, tmp_path / "t.pt")
    with pytest.raises(NotACheckpointError, match=r"t\.pt holds no state dict of tensors: not POSTER\+\+"):
        training_state_dict(tmp_path / "t.pt", "state_dict", "POSTER++")
    assert list(training_state_dict(tmp_path / "t.pt", "model", "x")) == ["w"]


def test_a_tensor_mapping_is_a_non_empty_str_to_tensor_mapping() -> None:
    assert tensor_mapping({"a": torch.ones(1)}) == {"a": torch.ones(1)}
    assert tensor_mapping(OrderedDict(a=torch.ones(1))).__class__ is dict
    for value in ({}, {"a": 1.0}, {1: torch.ones(1)}, {"a": torch.ones(1), "b": None}, [torch.ones(1)], None):
        assert tensor_mapping(value) is None, value


def test_an_unknown_persistent_id_is_quoted_cut_to_80_characters(tmp_path: Path) -> None:
    pid = ("x" * 200,)
    with pytest.raises(CorruptCheckpointError) as caught:
        read_checkpoint_file(write_archive(tmp_path / "p.pt", [Pid(pid)]))
    assert str(caught.value) == f"unknown persistent id {str(pid)[:80]!r} in the pickle"


def test_a_dtype_name_outside_torch_is_refused(tmp_path: Path) -> None:
    # numpy.float32 shares its name with torch.float32: only torch's own dtypes are read.
    with pytest.raises(UnsafeCheckpointError, match=r"numpy\.float32, which is not allowed"):
        read_checkpoint_file(write_archive(tmp_path / "n.pt", [np.float32]))


def damaged(path: Path, content: bytes) -> Path:
    """``path`` with one stored member's bytes changed in place: its CRC no longer matches."""
    data = path.read_bytes()
    assert data.count(content) == 1, content
    path.write_bytes(data.replace(content, bytes(255 - b for b in content)))
    return path


def test_a_damaged_member_is_named_with_the_file(tmp_path: Path) -> None:
    view = tensor(Storage(torch.FloatStorage, "0", 6), 0, (6,), (1,))
    path = damaged(write_archive(tmp_path / "o.pt", [view], {"0": SIX}), b"little")
    with pytest.raises(CorruptCheckpointError, match=r"^o\.pt: archive/byteorder is damaged \(Bad CRC-32"):
        read_checkpoint_file(path)
    path = write_archive(tmp_path / "d.pt", {"a_rather_long_key_to_find": 1})
    with pytest.raises(CorruptCheckpointError, match=r"^d\.pt: archive/data\.pkl is damaged \(Bad CRC-32"):
        read_checkpoint_file(damaged(path, b"a_rather_long_key_to_find"))


def test_a_broken_pickle_says_what_the_unpickler_said(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "b.pt", "w") as archive:
        archive.writestr("archive/data.pkl", b"not a pickle")
    with pytest.raises(CorruptCheckpointError) as caught:
        read_checkpoint_file(tmp_path / "b.pt")
    assert str(caught.value) == "b.pt: the pickle does not read back (invalid load key, 'n'.)"


def test_a_training_checkpoint_may_hold_the_scripts_own_objects(tmp_path: Path) -> None:
    path = write_archive(tmp_path / "t.pt", {"state_dict": {"w": torch.ones(2)}, "recorder": Plain()})
    with pytest.raises(UnsafeCheckpointError, match="Plain"):
        training_state_dict(path, "state_dict", "x")
    state = training_state_dict(path, "state_dict", "x", allow_inert={f"{HERE}.Plain"})
    assert list(state) == ["w"] and torch.equal(state["w"], torch.ones(2))
