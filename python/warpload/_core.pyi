"""Types of warpload._core, the C++ engine (csrc/bindings.cpp): mapped files, host buffers, plan execution."""
from typing import Any, Optional, Sequence, Union

from typing_extensions import Buffer

# A destination region of execute: a writable C-contiguous buffer, or (address, nbytes) of memory the caller owns.
_Region = Union[Buffer, tuple[int, int]]

class File:
    """An open checkpoint file, mapped whole (copy-on-write); its buffer is the mapping."""

    def __init__(self, path: str) -> None:
        """Opens and maps path; raises EngineIOError (errno, path) when it cannot."""
    @property
    def path(self) -> str:
        """The path the file was opened with."""
    @property
    def size(self) -> int:
        """The file's size in bytes."""
    def read(self, offset: int, nbytes: int) -> bytes:
        """Bytes [offset, offset+nbytes) of the file; CheckpointError (path, offset) outside it."""
    def read_spans(self, offsets: Sequence[int], nbytes: int) -> bytes:
        """nbytes at each offset, read with pread and concatenated; CheckpointError outside the file."""
    def resident_fraction(self) -> float:
        """Fraction of the file's pages in the page cache."""
    def __buffer__(self, flags: int, /) -> memoryview:
        """The mapping as a writable buffer of bytes (writes stay in this process)."""

class Progress:
    """Bytes a running execute / cuda_execute / prefault has finished; read it from another thread."""

    def __init__(self) -> None:
        """A counter at 0."""
    @property
    def bytes(self) -> int:
        """Bytes finished so far."""

class HostBuffer:
    """Anonymous memory, zero-filled lazily: the destination of owned-memory loads."""

    def __init__(self, nbytes: int, huge_pages: bool = False) -> None:
        """Maps nbytes, 2 MiB-aligned and advised for transparent huge pages with huge_pages."""
    @property
    def size(self) -> int:
        """The buffer's size in bytes."""
    def __buffer__(self, flags: int, /) -> memoryview:
        """The buffer's bytes, writable."""

def execute(files: Sequence[File], table: Buffer, regions: Sequence[_Region], *, warm_fraction: float,
            coalesce_gap: int, padded: Sequence[int] = ..., method: int = 0, num_threads: int = 0,
            chunk_bytes: int = 0, huge_pages: bool = False, populate: bool = True,
            progress: Optional[Progress] = None) -> dict[str, int]:
    """Runs an int64 plan table (9 columns, engine/host.py plan_table) into regions, every row checked
    first (DestinationError, CheckpointError); returns {'copies', 'bytes'}."""

def convert_buffer(src: Buffer, src_dtype: int, dst_dtype: int) -> bytes:
    """A whole buffer converted between engine dtype codes; for tests."""

def cuda_runtime(candidates: Sequence[str]) -> tuple[str, int]:
    """(path, device count) of the first CUDA runtime of candidates that loads; CudaUnavailableError if none."""

def cuda_execute(runtime_candidates: Sequence[str], files: Sequence[File], table: Buffer,
                 regions: Sequence[tuple[int, int]], device: int, buffer_bytes: int, num_buffers: int,
                 num_streams: int, *, warm_fraction: float, coalesce_gap: int, padded: Sequence[int] = ...,
                 num_threads: int = 0, method: int = 0, progress: Optional[Progress] = None) -> dict[str, int]:
    """Runs a plan table of raw copies into device regions (address, nbytes) via pinned buffers; returns counters."""

def tf_bundle_index(path: str) -> tuple[tuple[int, int, int, int, list[int]], list[tuple]]:
    """A TF bundle's .index: (header, entries (key, dtype, shape, shard_id, offset, size, masked crc32c, slices))."""

def tf_bundle_strings(data: bytes, count: int, masked_crc: int, path: str, key: bytes, offset: int) -> list[bytes]:
    """Decodes a stored DT_STRING tensor of count elements, checking its CRCs; path, key, offset label errors."""

def tf_bundle_first_bad_checksum(files: Sequence[File], jobs: Sequence[tuple[int, int, int, int]],
                                 num_threads: int = 0) -> int:
    """Index of the first (file, offset, nbytes, masked crc32c) job whose bytes do not match, or -1."""

def crc32c(data: Buffer, hardware: Optional[bool] = None, value: int = 0) -> int:
    """CRC-32C of a buffer (unmasked), continuing from value; hardware=True/False forces SSE4.2/table."""

def crc32c_has_hardware() -> bool:
    """Whether this CPU has the SSE4.2 crc32 instruction."""

def scan_pickle(data: Buffer, max_nesting: int) -> tuple[str, int, int, list[tuple[int, bytes, bytes]]]:
    """Checks a weights-only pickle without running it: (status, position, memo index, globals before position)."""

def weights_only_opcodes() -> bytes:
    """The pickle opcodes scan_pickle accepts."""

def evict_from_page_cache(path: str) -> None:
    """Drops a file's pages from the page cache."""

def prefault(files: Sequence[File], ranges: Sequence[tuple[int, int, int]], num_threads: int = 0,
             use_madvise: bool = True, progress: Optional[Progress] = None) -> bool:
    """Maps every page of the (file, offset, nbytes) ranges in parallel; True when MADV_POPULATE_READ did it."""

def dequantize_fp8(matrices: Sequence[tuple[Any, Any, int, int, int, int, int, tuple[int, int], int]], *,
                   num_threads: int = 0) -> None:
    """Each matrix: (fp8 weight buffer, float32 scales buffer, rows, cols, scale_rows, scale_cols, weight dtype
    code, (dst address, dst nbytes), dst dtype code); dst = round(float32(w) * scale), all checked first."""

def available_cores() -> int:
    """Cores this process may run on."""

def write_file(path: str, header: Buffer, table: Buffer, total: int, *, method: int = 0, num_threads: int = 0,
               chunk_bytes: int = 0) -> None:
    """Creates path (total bytes): header at 0, then each (address, nbytes, offset) row of a uint64 table, which must
    tile the rest of the file; method 0 pwritev from every thread, 1 one sequential pass, 2 a shared mapping.
    EngineIOError (errno, path, offset) when a write fails, ValueError for rows that do not tile the file."""

def write_bytes(header: Buffer, table: Buffer, total: int, *, num_threads: int = 0) -> bytes:
    """The bytes write_file would write, copied in parallel into a new bytes object."""
