"""Layer 2, the engine: runs load plans through the C++ core and hands the bytes over as torch tensors.

`host` copies into host memory (one buffer, or tensors the caller owns), `cuda` streams into GPU memory
through a pinned ring, `devices` registers them by device type; `fill` writes records into preallocated
parameters, `mapped` gives views of memory-mapped files instead, `tf_tensors` lays TensorFlow tensors out as
PyTorch's, `torch_file` rebuilds what torch.load returns around the storages it loads, `progress` counts
the bytes done, `machine` reads the facts that decide allocation; `writer` saves tensors as safetensors (refusing
shared memory by `shared_storage`'s rule). Every
destination reaches the C++ core as a region (buffer, length) that it checks each copy against.
It may import the base modules (errors, constants, dtypes, plan, _native) and the readers' records (formats, tf);
never the tensor API, models or loading above it.
"""
from .devices import materialize
from .host import (
                   execute,
                   open_files,
                   plan_table,
                   run_table,
                   storage_tensors,
                   tensor_region,
                   wrap_tensors,
                   zero_copy_views,
)

__all__ = ["execute", "materialize", "open_files", "plan_table", "run_table", "storage_tensors", "tensor_region",
           "wrap_tensors",
           "zero_copy_views"]
