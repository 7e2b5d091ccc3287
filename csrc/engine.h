// engine.h — executes a load plan: copy operations from files into memory, in parallel, converting dtypes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "dtype.h"
#include "io.h"

namespace warpload {

// One planned copy: src_nbytes of files[file] at src_offset, in src_dtype, written to dst as
// dst_dtype (src_nbytes / itemsize(src) * itemsize(dst) bytes). Equal dtypes copy raw bytes.
struct CopyOp {
    uint32_t file;
    uint64_t src_offset;
    uint64_t src_nbytes;
    DType src_dtype;
    uint8_t* dst;
    DType dst_dtype;
};

// How bytes leave the file. Auto measures page-cache residency (mincore) per file: resident
// files are copied from the mapping, cold ones are read with pread straight into the
// destination, which avoids both a page fault per source page and a second pass.
enum class ReadMethod : int32_t { Auto = 0, Mmap = 1, Pread = 2 };

struct ExecuteOptions {
    ReadMethod method = ReadMethod::Auto;
    size_t num_threads = 0;             // 0: one per available core
    size_t chunk_bytes = size_t(4) << 20;  // work unit handed to one thread
};

// Checks every operation (file index, bounds with overflow checks, dtype pair), then runs them
// all on the shared thread pool. Throws CheckpointError for a bad plan, IOError for a failed
// read. Plans run one at a time; each uses every core.
void execute_plan(const std::vector<std::shared_ptr<MappedFile>>& files, const std::vector<CopyOp>& ops,
                  const ExecuteOptions& options);

}  // namespace warpload
