"""PyTorch zip checkpoints (torch.save, torch >= 1.6; pytorch_model.bin): data.pkl and data/<key> as plan records."""
from __future__ import annotations

from typing import Any

from ..constants import TORCH_MAX_PICKLE_BYTES
from ..dtypes import byteswap_unit
from ..errors import CheckpointError, UnsupportedFormatError
from .registry import CheckpointContents, Format, register
from .torch_objects import StorageRef, TorchFile, state_dict_records, storage_id
from .torch_pickle import load_pickle
from .zip_archive import STORED, ZipArchive, ZipEntry

ZIP_MAGIC = b"PK\x03\x04"
# caffe2/serialize/versions.h kMinSupportedFileFormatVersion .. kMaxSupportedFileFormatVersion (torch 2.13).
SUPPORTED_VERSIONS = range(1, 0xA + 1)


def sniff(head: bytes, size: int) -> bool:
    # torch itself only checks the first bytes (serialization.py _is_zipfile, formats.md 0).
    return head.startswith(ZIP_MAGIC)


class TorchArchive:
    """The records of one torch.save archive, found under its top folder (formats.md 2.1)."""

    def __init__(self, archive: ZipArchive) -> None:
        self.archive = archive
        self.path = archive.path
        first = next(iter(archive.entries), "")
        folder, slash, _ = first.partition("/")
        if not slash:
            raise UnsupportedFormatError(
                f"{self.path}: a zip archive whose first entry {first!r} is not in a folder, so not a torch.save "
                "checkpoint (torch names the folder after the file, e.g. pytorch_model/data.pkl)", path=self.path)
        self.folder = folder
        self.big_endian = False  # check_readable reads the byteorder record

    def entry(self, name: str) -> ZipEntry:
        found = self.archive.entries.get(f"{self.folder}/{name}")
        if found is None:
            raise CheckpointError(f"{self.path}: the archive has no record {self.folder}/{name}; it is not a "
                                  "complete torch.save checkpoint", path=self.path)
        return found

    def has(self, name: str) -> bool:
        return f"{self.folder}/{name}" in self.archive.entries

    def text(self, name: str) -> str:
        return self.archive.read(self.entry(name), limit=64).decode("ascii", "replace").strip()

    def check_readable(self) -> None:
        """Refuses TorchScript, unknown versions and byte orders before the pickle is read; notes big-endian
        storages, which the engine byte-swaps while copying."""
        if self.has("constants.pkl"):
            raise UnsupportedFormatError(f"{self.path}: a TorchScript archive (it has constants.pkl); load it with "
                                         "torch.jit.load", path=self.path)
        version = self.text(".data/version" if self.has(".data/version") else "version")
        if not version.isdigit() or int(version) not in SUPPORTED_VERSIONS:
            raise UnsupportedFormatError(
                f"{self.path}: archive format version {version!r}; warpload reads versions "
                f"{SUPPORTED_VERSIONS.start}-{SUPPORTED_VERSIONS.stop - 1}, as torch 2.13 does", path=self.path)
        # Absent means little-endian (serialization.py _load, with the default load endianness); torch
        # refuses other values too.
        byteorder = self.text("byteorder") if self.has("byteorder") else "little"
        if byteorder not in ("little", "big"):
            raise UnsupportedFormatError(
                f"{self.path}: record {self.folder}/byteorder says {byteorder[:20]!r}; torch.save writes 'little' "
                "or 'big' there, so the file is corrupt", path=self.path)
        self.big_endian = byteorder == "big"

    def storage(self, key: str, dtype: Any, numel: int) -> StorageRef:
        """The storage data/<key>, checked to be stored uncompressed and long enough for its elements."""
        ref = StorageRef(key, dtype, numel)
        if self.big_endian:
            ref.byteswap = byteswap_unit(dtype)
        entry = self.entry(f"data/{key}")
        if entry.method != STORED:
            raise UnsupportedFormatError(
                f"{self.path}: record {entry.name} is compressed (zip method {entry.method}); warpload reads "
                "storages in place, as torch.save writes them (stored): re-save the file with torch.save",
                path=self.path)
        if entry.size < ref.nbytes:
            raise CheckpointError(
                f"{self.path}: record {entry.name} holds {entry.size} bytes, but its storage needs {ref.nbytes} "
                f"({numel} elements of {dtype or 'bytes'}); the file is truncated or corrupt", path=self.path)
        ref.offset = self.archive.data_offset(entry)
        return ref


def read_structure(path: str) -> TorchFile:
    """The unpickled data.pkl of a torch.save zip checkpoint, with its storages located in the archive.

    Raises UnsafeCheckpointError for a pickle outside the weights-only allow-list, CheckpointError for a
    corrupt archive or pickle, UnsupportedFormatError for valid files warpload does not return tensors from.
    """
    with ZipArchive(path) as archive:
        torch_archive = TorchArchive(archive)
        torch_archive.check_readable()
        storage_folder = f"{torch_archive.folder}/data/"
        archive.read_local_headers(entry for entry in archive.entries.values()
                                   if entry.name.startswith(storage_folder))
        data = archive.read(torch_archive.entry("data.pkl"), limit=TORCH_MAX_PICKLE_BYTES)
        source = f"{path}: data.pkl"
        storages: dict[str, StorageRef] = {}

        def persistent_load(pid: Any) -> StorageRef:
            storage_type, key, numel, _ = storage_id(pid, 5, source=source, path=path)
            # Like torch, the first id of a key decides its storage; later ones reuse it.
            ref = storages.get(key)
            if ref is None:
                ref = storages[key] = torch_archive.storage(key, storage_type.dtype, numel)
            elif ref.dtype != storage_type.dtype:
                # The same bytes as another dtype: torch.save allows it for empty storages only.
                ref = storages.setdefault(f"{key} as {storage_type.dtype}",
                                          torch_archive.storage(key, storage_type.dtype, numel))
            return ref

        state = load_pickle(data, path=path, name="data.pkl", persistent_load=persistent_load)
    return TorchFile(path, state, tuple(storages.values()))


def read_records(path: str) -> CheckpointContents:
    """Tensor records of the state dict of a torch.save zip checkpoint (found in the common wrappers too), in
    its order. Raises what read_structure raises, and UnsupportedFormatError when the file holds no state dict."""
    return CheckpointContents(tuple(state_dict_records(read_structure(path).state, path)), None)


register(Format("pytorch", sniff, read_records, read_structure=read_structure))
