"""Every exception warpload raises on purpose; each also inherits the built-in type callers already catch."""
from __future__ import annotations

import errno
import os
from typing import Optional

# safetensors' own error class: warpload's errors for what safetensors also refuses derive from it too, so code
# written as `except safetensors.SafetensorError:` keeps catching them (safetensors is a dependency, and importing
# it loads only its small Rust extension, no torch).
from safetensors import SafetensorError


class WarploadError(Exception):
    """Base class of all warpload errors."""


class CheckpointError(WarploadError, ValueError):
    """A checkpoint file is corrupt, truncated, inconsistent or hostile.

    ``path``, ``tensor`` and ``offset`` name where the problem is, when known.
    """

    def __init__(self, message: str, *, path: Optional[str] = None, tensor: Optional[str] = None,
                 offset: Optional[int] = None) -> None:
        super().__init__(message)
        self.path = path
        self.tensor = tensor
        self.offset = offset


class HeaderError(CheckpointError, SafetensorError):
    """A checkpoint header (length, JSON, or the tensor table in it) is invalid; also a safetensors.SafetensorError."""


class UnsupportedFormatError(CheckpointError):
    """A file is not in any checkpoint format warpload reads, or holds something its reader cannot return."""


class UnsafeCheckpointError(CheckpointError):
    """A pickled checkpoint asks for more than a weights-only load allows (torch.load(weights_only=True)'s
    allow-list): an unknown global, a call to one, a forbidden opcode. Nothing from the pickle was run."""


class UnsupportedDtypeError(WarploadError, TypeError):
    """A tensor's dtype has no torch equivalent here, or cannot be converted as asked."""


class ZeroCopyError(WarploadError, ValueError):
    """zero_copy=True was asked, and a tensor cannot view the checkpoint file (a conversion, a transpose,
    unaligned bytes, a GPU target)."""


class ArchitectureNotSupportedError(WarploadError, ValueError):
    """The checkpoint's architecture has no built-in class (or uses features it lacks) and transformers cannot help."""


class DeviceMapError(WarploadError, ValueError):
    """A device_map, max_memory or offload option names an unknown device, cannot hold the model, or lacks a folder."""


class AttentionUnavailableError(WarploadError, ImportError):
    """attn_implementation names a kernel (FlashAttention 2 or 3) that is not installed; transformers' message."""


class ShapeMismatchError(WarploadError, RuntimeError):
    """Checkpoint tensors have other shapes than the model's, and ignore_mismatched_sizes is False."""


class CheckpointNotFoundError(WarploadError, FileNotFoundError):
    """The path does not exist, or a directory holds no checkpoint warpload recognises."""

    @classmethod
    def no_such_file(cls, path: str) -> "CheckpointNotFoundError":
        """The error for a missing path, with the OS error's errno, strerror and filename (str():
        "[Errno 2] No such file or directory: 'path'"), as open() and safetensors raise it."""
        return cls(errno.ENOENT, os.strerror(errno.ENOENT), path)


class SliceError(WarploadError, IndexError, SafetensorError):
    """safe_open's get_slice(...)[index] was given an index safetensors refuses (with its message): a
    non-empty list, an index or slice bound outside the tensor."""


class ClosedFileError(WarploadError, ValueError, SafetensorError):
    """A safe_open handle was used after its `with` block closed it (safetensors raises "File is closed")."""


class EngineIOError(WarploadError, OSError):
    """The operating system failed a read, open or allocation (raised by the C++ engine).

    ``errno`` is the system's error number; ``path`` and ``offset`` name the file and byte, when known.
    """

    def __init__(self, errno: int, message: str, *, path: Optional[str] = None, offset: Optional[int] = None) -> None:
        super().__init__(errno, message)
        self.path = path
        self.offset = offset


class DestinationError(WarploadError, ValueError):
    """A load plan would write outside the memory given to receive it: a bug in the caller, not in the checkpoint.
    Raised by the C++ engine before any byte is written.

    Row ``row`` of the plan (tensor ``tensor``, when known; source file ``path``) writes ``nbytes`` bytes at
    ``offset`` of destination region ``region``, which has ``region_size`` bytes.
    """

    def __init__(self, message: str, *, row: int, region: int, offset: int, nbytes: int, region_size: int,
                 path: Optional[str] = None, tensor: Optional[str] = None) -> None:
        super().__init__(message)
        self.row = row
        self.region = region
        self.offset = offset
        self.nbytes = nbytes
        self.region_size = region_size
        self.path = path
        self.tensor = tensor


class CudaError(WarploadError, RuntimeError):
    """A CUDA runtime call failed while loading to a GPU; ``code`` is the cudaError_t value."""

    def __init__(self, message: str, *, code: Optional[int] = None) -> None:
        super().__init__(message)
        self.code = code


class CudaUnavailableError(CudaError):
    """No CUDA runtime could be loaded, or it sees no GPU (or not the one asked for)."""


class TensorBundleError(CheckpointError):
    """A TensorFlow tensor bundle (.index SSTable, its entries or its data shards) is corrupt or inconsistent."""


class HubError(WarploadError, OSError):
    """A Hub download failed (transformers raises OSError for these); says which repo, revision and file.

    The file is `repo_file`: OSError's own `filename` would replace the message in str().
    """

    def __init__(self, message: str, *, repo_id: Optional[str] = None, revision: Optional[str] = None,
                 filename: Optional[str] = None) -> None:
        super().__init__(message)
        self.repo_id = repo_id
        self.revision = revision
        self.repo_file = filename


class RepositoryNotFoundError(HubError):
    """No such repository on the endpoint (or it is private and no valid token was sent)."""


class GatedRepoError(RepositoryNotFoundError):
    """The repository is gated or private: the server answered 401/403 for the token sent."""


class RevisionNotFoundError(HubError):
    """The repository has no such branch, tag or commit."""


class EntryNotFoundError(HubError, FileNotFoundError):
    """The repository has no such file at that revision."""


class NotCachedError(HubError, FileNotFoundError):
    """Offline (local_files_only or HF_HUB_OFFLINE) and the file is not in the cache."""


class UnsavableTensorError(WarploadError, ValueError):
    """save_file / save were given what safetensors.torch also refuses with ValueError: no dict, a value that is not
    a tensor, a sparse or non-contiguous tensor, or a tensor named like the header's `__metadata__` entry."""


class NotAStringError(WarploadError, TypeError):
    """A tensor name, or a metadata key or value, given to save_file / save is not a str (safetensors raises
    TypeError)."""


class SharedTensorsError(WarploadError, RuntimeError):
    """Tensors given to save_file / save share memory: the file would hold the bytes twice and load them untied
    (safetensors.torch raises RuntimeError). ``groups`` lists the names of each set of tensors that share."""

    def __init__(self, message: str, *, groups: list) -> None:
        super().__init__(message)
        self.groups = groups


class NoTensorDataError(WarploadError, NotImplementedError):
    """A tensor given to save_file / save is on the meta device and has no bytes to write (torch raises
    NotImplementedError, a RuntimeError, and safetensors lets it through)."""


class UnknownBackendError(WarploadError, ValueError, SafetensorError):
    """load_file / safe_open got a `backend` safetensors does not know either ("mmap" and "pread" are accepted)."""


class GenerationOptionError(WarploadError, ValueError):
    """generate() got an option it does not know, or a value transformers' GenerationConfig would refuse."""


class UnsupportedGenerationOptionError(WarploadError, NotImplementedError):
    """generate() was asked for a transformers decoding option the built-in models do not implement
    (load with backend="transformers" for it)."""


class SlowTokenizerError(WarploadError, ImportError):
    """A repo has no tokenizer.json, only a slow tokenizer's files, and transformers (to convert them) is missing."""
