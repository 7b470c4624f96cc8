"""The one reader of foreign checkpoint files: a restricted unpickler that never runs the file's code.

``torch.load`` without ``weights_only`` imports and calls whatever the pickle names; ``weights_only=True``
refuses the whole-model pickles that HSEmotion ships (``torch.save(model)`` under timm 0.4.5 / 0.6 / 0.9).
This reader sits between the two. It opens torch's zip format (``<root>/data.pkl`` + ``<root>/data/<key>``)
and rebuilds:

- tensors: ``torch._utils._rebuild_tensor_v2`` / ``_rebuild_parameter`` over typed storages, read from the
  archive and checked against their declared sizes (a tensor is a strided view of its storage);
- plain values: ``collections.OrderedDict``, ``set``, ``frozenset``, ``torch.Size``, dtypes, devices,
  and protocol 2's bytes (``_codecs.encode(str, "latin1")`` only);
- classes under ``torch.nn.`` and ``timm.`` (and the names a format passes in ``allow_inert``) as
  ``InertRecord``: an object that only keeps its pickled arguments and state. Nothing of the real class is
  imported, no ``__setstate__`` or ``__init__`` of it runs, so a module pickled under any timm version reads
  the same, and ``module_state_dict`` walks the records (``_parameters``, ``_buffers``, ``_modules``) into
  the flat state dict ``nn.Module.state_dict()`` would give.

A TorchScript archive (``torch.jit.save``: OpenAI's CLIP release) is read the same way: its ``__torch__.*``
module objects become records and ``torchscript_state_dict`` collects their tensor attributes; the
archive's compiled ``code/`` is never opened.

Any other global (``os.system``, ``builtins.eval``, an unknown ``__main__`` class) is refused before it is
called, with ``UnsafeCheckpointError`` naming it. Every failure is a ``CheckpointImportError`` with a one-line
message; the legacy pre-1.6 (non-zip) torch format is recognised and refused.
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import torch

StateDict = dict[str, torch.Tensor]

INERT_PREFIXES: Final = ("torch.nn.", "timm.")
# torch.save's own storage classes (typed storages; ``UntypedStorage`` is bytes).
_STORAGE_DTYPES: Final[dict[str, torch.dtype]] = {
    "DoubleStorage": torch.float64,
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
    "UntypedStorage": torch.uint8,
}
_DTYPES: Final[dict[str, torch.dtype]] = {
    name: getattr(torch, name)
    for name in (
        "float64",
        "float32",
        "float16",
        "bfloat16",
        "int64",
        "int32",
        "int16",
        "int8",
        "uint8",
        "bool",
    )
}
_PICKLE_MAGICS: Final = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")
_MAX_DEPTH: Final = 200
# Protocols 0-2 write Python 2's module names (pickle's fix_imports): set and frozenset under __builtin__,
# and protocols 0/1 their objects through copy_reg._reconstructor.
_PYTHON2_MODULES: Final = {"__builtin__": "builtins", "copy_reg": "copyreg"}


class CheckpointImportError(ValueError):
    """A checkpoint that cannot be imported; the message is one line and says why."""


class UnsafeCheckpointError(CheckpointImportError):
    """The pickle names a global outside the allow-list (it would have run code)."""


class CorruptCheckpointError(CheckpointImportError):
    """Truncated or damaged: the archive, the pickle or a storage does not read back."""


class NotACheckpointError(CheckpointImportError):
    """The file is not a torch checkpoint at all (or one whose contents no format knows)."""


class StateDictMismatchError(CheckpointImportError):
    """The weights do not fit the architecture: missing, unexpected or mis-shaped keys."""


class InertRecord:
    """A pickled object of a class that is named but never imported: its arguments and its state only.

    ``global_name`` (a class attribute of each generated subclass) is ``module.qualname`` as pickled."""

    global_name: str = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> InertRecord:
        record = object.__new__(cls)
        record.__dict__["args"] = args
        record.__dict__["state"] = None
        return record

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass  # REDUCE calls the "class"; the arguments were kept by __new__

    def __setstate__(self, state: Any) -> None:
        self.__dict__["state"] = state

    def __repr__(self) -> str:
        return f"<inert {self.global_name}>"

    @property
    def attributes(self) -> dict[str, Any]:
        """The pickled ``__dict__`` (a (dict, slots) pair merged), or {} when the state is not a dict."""
        state = self.__dict__["state"]
        if isinstance(state, tuple) and len(state) == 2:
            merged: dict[str, Any] = {}
            for part in state:
                if isinstance(part, dict):
                    merged.update(part)
            return merged
        return dict(state) if isinstance(state, dict) else {}


@dataclass(frozen=True)
class _StorageType:
    dtype: torch.dtype


def _rebuild_tensor(
    storage: Any, offset: int, size: Iterable[int], stride: Iterable[int], *_: Any
) -> torch.Tensor:
    if not isinstance(storage, torch.Tensor):
        raise CorruptCheckpointError("a tensor refers to something that is not a storage")
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if len(size) != len(stride) or min((*size, *stride, offset), default=0) < 0:
        raise CorruptCheckpointError(f"a tensor has an invalid size/stride {size}/{stride}")
    last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True)) if all(size) else offset - 1
    if last >= storage.numel():
        raise CorruptCheckpointError(f"a tensor of size {size} reaches past its storage ({storage.numel()})")
    return storage.as_strided(size, stride, offset)


def _rebuild_parameter(data: Any, *_: Any) -> Any:
    return data  # a Parameter is its data here: nothing will train it


def _reconstructor(cls: Any, base: Any, state: Any = None) -> Any:
    # copyreg._reconstructor: protocol 0/1's way of creating an object; only inert records may use it.
    if isinstance(cls, type) and issubclass(cls, InertRecord):
        return cls.__new__(cls)
    raise UnsafeCheckpointError(f"copyreg._reconstructor of {cls!r} is not allowed")


def _latin1(text: Any, encoding: str = "latin1") -> bytes:
    # Protocol 2 pickles bytes as _codecs.encode(str, "latin1") (Python 2 compatibility): that one use only.
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafeCheckpointError(f"_codecs.encode with {encoding!r} is not allowed")
    return text.encode("latin1")


def _device(*args: Any) -> str:
    return str(args[0]) if args else "cpu"


_VALUES: Final[dict[str, Any]] = {
    "collections.OrderedDict": collections.OrderedDict,
    "builtins.set": set,
    "builtins.frozenset": frozenset,
    "builtins.object": object,  # the base class protocols 0/1 name beside an object's own class
    "torch._utils._rebuild_tensor_v2": _rebuild_tensor,
    "torch._utils._rebuild_parameter": _rebuild_parameter,
    "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
    "copyreg._reconstructor": _reconstructor,
    "torch.Size": tuple,
    "torch.device": _device,
    "_codecs.encode": _latin1,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(
        self,
        data: bytes,
        load_storage: Callable[[_StorageType, str, int], torch.Tensor],
        allow_inert: frozenset[str],
    ) -> None:
        super().__init__(io.BytesIO(data))
        self._load_storage = load_storage
        self._allow_inert = allow_inert
        self._records: dict[str, type[InertRecord]] = {}

    def find_class(self, module: str, name: str) -> Any:
        module = _PYTHON2_MODULES.get(module, module)
        full = f"{module}.{name}"
        if full in _VALUES:
            return _VALUES[full]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if module == "torch" and name in _DTYPES:
            return _DTYPES[name]
        if self._inert(full):
            return self._record_class(full)
        raise UnsafeCheckpointError(
            f"the checkpoint references {full}, which is not allowed (only tensors, containers and "
            f"torch.nn / timm module records are read; nothing from the file is executed)"
        )

    def _inert(self, full: str) -> bool:
        if full.startswith(INERT_PREFIXES) or full in self._allow_inert:
            return True
        return any(entry.endswith(".") and full.startswith(entry) for entry in self._allow_inert)

    def _record_class(self, full: str) -> type[InertRecord]:
        if full not in self._records:
            short = full.rsplit(".", 1)[-1]
            self._records[full] = type(short, (InertRecord,), {"global_name": full, "__module__": __name__})
        return self._records[full]

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise CorruptCheckpointError(f"unknown persistent id {str(pid)[:80]!r} in the pickle")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType):
            raise CorruptCheckpointError(f"storage of unknown type {storage_type!r}")
        return self._load_storage(storage_type, str(key), int(numel))


def read_checkpoint_file(path: Path, *, allow_inert: Iterable[str] = ()) -> Any:
    """The unpickled top-level object of a torch zip checkpoint, tensors rebuilt, classes as records.

    ``allow_inert``: further globals to rebuild as ``InertRecord`` (exact ``module.Name``, or a prefix
    ending in "."), e.g. ``{"__main__.RecorderMeter", "numpy."}`` for training checkpoints that pickled
    their loggers. Raises CheckpointImportError (its subclasses) for anything that does not read back.
    """
    path = Path(path)
    if not path.is_file():
        raise NotACheckpointError(f"{path} does not exist or is not a file")
    with path.open("rb") as handle:
        head = handle.read(8)
    if not head.startswith(b"PK"):
        if head.startswith(_PICKLE_MAGICS):
            raise NotACheckpointError(
                f"{path.name} is a legacy (torch < 1.6, non-zip) or plain pickle, which this reader refuses"
            )
        raise NotACheckpointError(f"{path.name} is not a torch checkpoint (it starts with {head!r})")
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise CorruptCheckpointError(f"{path.name} is a truncated or corrupt zip archive ({exc})") from None
    with archive:
        return _unpickle_archive(path.name, archive, frozenset(allow_inert))


def _unpickle_archive(label: str, archive: zipfile.ZipFile, allow_inert: frozenset[str]) -> Any:
    pickles = [name for name in archive.namelist() if name.endswith("/data.pkl") and name.count("/") == 1]
    if len(pickles) != 1:
        raise NotACheckpointError(f"{label} is a zip archive but not a torch checkpoint (no <name>/data.pkl)")
    root = pickles[0].split("/")[0]
    byteorder = _member(archive, f"{root}/byteorder", label, required=False)
    if byteorder not in (None, b"little"):
        raise CorruptCheckpointError(
            f"{label} was saved big-endian ({byteorder!r}); only little-endian is read"
        )
    storages: dict[str, torch.Tensor] = {}

    def load_storage(kind: _StorageType, key: str, numel: int) -> torch.Tensor:
        if key not in storages:
            raw = _member(archive, f"{root}/data/{key}", label)
            assert raw is not None
            itemsize = torch.empty(0, dtype=kind.dtype).element_size()
            if numel < 0 or len(raw) != numel * itemsize:
                raise CorruptCheckpointError(
                    f"{label}: storage {key} holds {len(raw)} bytes, its tensor needs {numel} x {itemsize}"
                )
            flat = (
                torch.frombuffer(bytearray(raw), dtype=kind.dtype)
                if raw
                else torch.empty(0, dtype=kind.dtype)
            )
            storages[key] = flat
        return storages[key]

    data = _member(archive, pickles[0], label)
    assert data is not None
    try:
        return _RestrictedUnpickler(data, load_storage, allow_inert).load()
    except CheckpointImportError:
        raise
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        IndexError,
        KeyError,
        AttributeError,
    ) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CorruptCheckpointError(f"{label}: the pickle does not read back ({message})") from None


def _member(archive: zipfile.ZipFile, name: str, label: str, *, required: bool = True) -> bytes | None:
    try:
        return archive.read(name)
    except KeyError:
        if required:
            raise CorruptCheckpointError(f"{label}: the archive lacks {name}") from None
        return None
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:  # CRC mismatch, cut-off member
        raise CorruptCheckpointError(f"{label}: {name} is damaged ({exc})") from None


# ----------------------------------------------------------------------------- records -> state dict


def is_module_record(value: Any) -> bool:
    return isinstance(value, InertRecord) and "_parameters" in value.attributes


def module_state_dict(record: Any) -> StateDict:
    """The flat state dict of a pickled module (``InertRecord`` tree): parameters, persistent buffers,
    children, with the usual dotted keys; what ``nn.Module.state_dict()`` of the live module gives."""
    if not is_module_record(record):
        what = record.global_name if isinstance(record, InertRecord) else type(record).__name__
        raise NotACheckpointError(f"the checkpoint holds a {what}, not a pickled torch module")
    out: StateDict = {}
    _walk(record, "", out, 0)
    return out


def _walk(record: InertRecord, prefix: str, out: StateDict, depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise CorruptCheckpointError("the pickled module tree is deeper than any real network")
    attributes = record.attributes
    skip = attributes.get("_non_persistent_buffers_set") or set()
    for group in ("_parameters", "_buffers"):
        values = attributes.get(group) or {}
        if not isinstance(values, Mapping):
            raise CorruptCheckpointError(f"{record.global_name}.{group} is not a mapping")
        for name, value in values.items():
            if value is None or (group == "_buffers" and name in skip):
                continue
            if not isinstance(value, torch.Tensor):
                raise CorruptCheckpointError(f"{prefix}{name} of {record.global_name} is not a tensor")
            out[f"{prefix}{name}"] = value
    for name, child in (attributes.get("_modules") or {}).items():
        if child is None:
            continue
        if not is_module_record(child):
            raise CorruptCheckpointError(f"submodule {prefix}{name} is not a pickled module")
        _walk(child, f"{prefix}{name}.", out, depth + 1)


# A TorchScript archive (``torch.jit.save``) pickles its module tree under these names; its ``code/`` folder,
# the compiled program, is never read.
SCRIPT_PREFIX: Final = "__torch__."


def is_torchscript_archive(path: Path) -> bool:
    """A zip with ``<root>/code/`` or ``<root>/constants.pkl``: ``torch.jit.save``'s layout."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(name.split("/")[1:2] == ["code"] or name.endswith("/constants.pkl") for name in names)


def torchscript_state_dict(path: Path) -> StateDict:
    """The tensors of a TorchScript archive's module tree, keyed as ``ScriptModule.state_dict()`` keys them.

    A scripted or traced module pickles each submodule as a ``__torch__.<qualname>`` object whose state is
    its attribute dictionary (parameters, buffers, submodules and plain values side by side). Those objects
    become inert records; every tensor attribute is kept under its dotted path. Tensor attributes that are
    not weights of the eager architecture (a traced non-persistent buffer) are the caller's to drop."""
    root = read_checkpoint_file(path, allow_inert=(SCRIPT_PREFIX,))
    if not (isinstance(root, InertRecord) and root.global_name.startswith(SCRIPT_PREFIX)):
        raise NotACheckpointError(f"{Path(path).name} is a zip archive but holds no TorchScript module")
    out: StateDict = {}
    _walk_script(root, "", out, 0)
    if not out:
        raise NotACheckpointError(f"{Path(path).name} is a TorchScript module without weights")
    return out


def _walk_script(record: InertRecord, prefix: str, out: StateDict, depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise CorruptCheckpointError("the scripted module tree is deeper than any real network")
    for name, value in record.attributes.items():
        if isinstance(value, torch.Tensor):
            out[f"{prefix}{name}"] = value
        elif isinstance(value, InertRecord) and value.global_name.startswith(SCRIPT_PREFIX):
            _walk_script(value, f"{prefix}{name}.", out, depth + 1)


def training_state_dict(path: Path, key: str, what: str, *, allow_inert: Iterable[str] = ()) -> StateDict:
    """The state dict a training script saved under ``key`` (or a bare state dict), with DataParallel's
    ``module.`` prefix removed: the layout POSTER, POSTER++ and OpenCLIP checkpoints share. ``what`` names
    the expected format in the error for a file that holds no state dict."""
    loaded = read_checkpoint_file(path, allow_inert=allow_inert)
    if isinstance(loaded, Mapping) and key in loaded:
        loaded = loaded[key]
    state = tensor_mapping(loaded)
    if state is None:
        raise NotACheckpointError(f"{Path(path).name} holds no state dict of tensors: not {what}")
    return {name.removeprefix("module."): value for name, value in state.items()}


def tensor_mapping(value: Any) -> StateDict | None:
    """``value`` itself when it is a non-empty mapping of str -> tensor (a saved state dict), else None."""
    if (
        isinstance(value, Mapping)
        and value
        and all(isinstance(key, str) and isinstance(item, torch.Tensor) for key, item in value.items())
    ):
        return dict(value)
    return None
