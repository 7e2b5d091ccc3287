"""Comparing what warpload.load_torch returns with what torch.load(weights_only=True) returns, object for object."""
from __future__ import annotations

import io
import pickle
import zipfile
from typing import Any

import torch

from conftest import same_bits


def torch_reference(path) -> Any:
    return torch.load(path, weights_only=True, map_location="cpu")


def assert_same_structure(got: Any, want: Any) -> None:
    """The same object graph: exact types (OrderedDict vs dict, tuple vs list, torch.Size, Parameter), equal
    primitives, tensors with the same bits, dtype, shape, stride, storage offset, math bits and requires_grad,
    OrderedDict attributes (`_metadata`), and the same sharing: objects repeated at the same places, and
    tensors viewing one storage exactly where torch's do."""
    got_leaves: list = []
    want_leaves: list = []
    _compare(got, want, "root", got_leaves, want_leaves, set())
    assert _partition(got_leaves, id) == _partition(want_leaves, id), "objects repeated at other places"
    assert _partition(got_leaves, _storage_key) == _partition(want_leaves, _storage_key), "storages shared differently"


def _compare(got: Any, want: Any, where: str, got_leaves: list, want_leaves: list, seen: set) -> None:
    assert type(got) is type(want), f"{where}: {type(got).__name__} != {type(want).__name__}"
    if id(want) in seen:
        return
    if isinstance(want, (list, tuple, dict, torch.Tensor, torch.storage.TypedStorage, torch.UntypedStorage)):
        seen.add(id(want))
        got_leaves.append(got)
        want_leaves.append(want)
    if isinstance(want, torch.Tensor):
        _compare_tensors(got, want, where)
    elif isinstance(want, torch.storage.TypedStorage):
        assert got.dtype == want.dtype and got.size() == want.size(), where
        assert bytes(got._untyped_storage) == bytes(want._untyped_storage), where
    elif isinstance(want, torch.UntypedStorage):
        assert bytes(got) == bytes(want), where
    elif isinstance(want, dict):
        assert list(got) == list(want), f"{where}: keys {list(got)[:5]} != {list(want)[:5]}"
        attributes = getattr(want, "__dict__", {})
        assert set(getattr(got, "__dict__", {})) == set(attributes), f"{where}: attributes"
        for key in want:
            _compare(got[key], want[key], f"{where}[{key!r}]", got_leaves, want_leaves, seen)
        for name in attributes:
            _compare(vars(got)[name], attributes[name], f"{where}.{name}", got_leaves, want_leaves, seen)
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want), where
        for index, (item, expected) in enumerate(zip(got, want)):
            _compare(item, expected, f"{where}[{index}]", got_leaves, want_leaves, seen)
    else:
        assert got == want, f"{where}: {got!r} != {want!r}"


def _compare_tensors(got: torch.Tensor, want: torch.Tensor, where: str) -> None:
    facts = ("dtype", "shape", "device", "requires_grad")
    assert [getattr(got, f) for f in facts] == [getattr(want, f) for f in facts], where
    assert (got.is_conj(), got.is_neg()) == (want.is_conj(), want.is_neg()), f"{where}: math bits"
    if want.is_meta:
        assert got.stride() == want.stride(), where
        return
    assert (got.stride(), got.storage_offset()) == (want.stride(), want.storage_offset()), where
    assert got._base is None, f"{where}: a view of another tensor, where torch.load gives none"
    assert same_bits(_dense(got), _dense(want)), f"{where}: bits differ"


def _dense(tensor: torch.Tensor) -> torch.Tensor:
    plain = tensor.detach().resolve_conj().resolve_neg()
    return torch.empty_like(plain, memory_format=torch.contiguous_format).copy_(plain)


def _storage_key(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and not value.is_meta and value.untyped_storage().nbytes():
        return value.untyped_storage().data_ptr()
    if isinstance(value, torch.storage.TypedStorage) and value.nbytes():
        return value.data_ptr()
    if isinstance(value, torch.UntypedStorage) and value.nbytes():
        return value.data_ptr()
    return None


def _partition(leaves: list, key: Any) -> set:
    groups: dict = {}
    for index, leaf in enumerate(leaves):
        found = key(leaf)
        if found is not None:
            groups.setdefault(found, set()).add(index)
    return {frozenset(group) for group in groups.values() if len(group) > 1}


def storage_dtypes(path) -> dict[str, torch.dtype]:
    """The dtype of each storage record of a torch.save archive, read with torch's own classes."""
    dtypes: dict[str, torch.dtype] = {}

    class Unpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            return _torch_global(module, name)

        def persistent_load(self, pid: Any) -> Any:
            _, storage_type, key, _, numel = pid
            dtype = torch.uint8 if storage_type is torch.UntypedStorage else storage_type.dtype
            dtypes[key] = dtype
            return torch.storage.TypedStorage(numel, dtype=dtype)

    with zipfile.ZipFile(path) as archive:
        folder = archive.namelist()[0].split("/")[0]
        Unpickler(io.BytesIO(archive.read(f"{folder}/data.pkl"))).load()
    return dtypes


def _torch_global(module: str, name: str) -> Any:
    import importlib

    return getattr(importlib.import_module(module), name)


def to_big_endian(path, out) -> None:
    """Rewrites a little-endian torch.save archive as a big-endian machine writes it: byteorder 'big', and every
    storage's units (elements, complex components) byte-reversed, as torch.load undoes (storage.byteswap)."""
    dtypes = storage_dtypes(path)
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as target:
        folder = source.namelist()[0].split("/")[0]
        for name in source.namelist():
            data = source.read(name)
            if name == f"{folder}/byteorder":
                data = b"big"
            elif name.startswith(f"{folder}/data/"):
                data = _swapped(data, dtypes[name.rsplit("/", 1)[1]])
            target.writestr(name, data)


def _swapped(data: bytes, dtype: torch.dtype) -> bytes:
    unit = torch.empty((), dtype=dtype).element_size() // (2 if dtype.is_complex else 1)
    if unit == 1:
        return data
    units = torch.frombuffer(bytearray(data), dtype=torch.uint8).view(-1, unit)
    return units.flip(1).contiguous().numpy().tobytes()
