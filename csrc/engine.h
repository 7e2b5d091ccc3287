// engine.h — executes a load plan: copy operations from files into memory, in parallel, converting dtypes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "dtype.h"
#include "io.h"
#include "progress.h"

namespace warpload {

// One planned copy: src_nbytes of files[file] at src_offset, in src_dtype, written to dst as
// dst_dtype (src_nbytes / itemsize(src) * itemsize(dst) bytes). Equal dtypes copy raw bytes.
// With rows > 0 the source is a row-major rows x cols matrix and dst receives its transpose
// (cols x rows), as TF -> PyTorch weight mapping needs; the transposition happens per chunk of
// source rows, in parallel, with no full-size temporary.
struct CopyOp {
    uint32_t file;
    uint64_t src_offset;
    uint64_t src_nbytes;
    DType src_dtype;
    uint8_t* dst;
    DType dst_dtype;
    uint64_t rows = 0;
    uint64_t cols = 0;
};

struct ExecuteOptions {
    ReadMethod method = ReadMethod::Auto;
    // A file with less of its span in the page cache than this is cold (choose_read_mode); the
    // caller passes python/warpload/constants.py MAP_WARM_FRACTION.
    double warm_fraction = 1.0;
    size_t num_threads = 0;             // 0: one per available core
    size_t chunk_bytes = size_t(4) << 20;  // work unit handed to one thread
    // Advise destinations of 4 MiB and more for transparent huge pages. A win on bare metal; a
    // loss in VMs that hand free memory back to the host (python/warpload/system.py decides).
    bool huge_pages = false;
    // Fault each chunk's destination in with one MADV_POPULATE_WRITE before copying into it.
    bool populate = true;
    // Advanced by each chunk's source bytes as it completes; nullptr: nobody watches.
    Progress* progress = nullptr;
};

// Checks every operation (file index, bounds with overflow checks, element size, dtype pair,
// transpose shape); throws CheckpointError naming the operation and file.
void validate_plan(const std::vector<std::shared_ptr<MappedFile>>& files, const std::vector<CopyOp>& ops);

// The byte range of one file a plan reads (empty when it reads none).
struct FileSpan {
    uint64_t begin = UINT64_MAX;
    uint64_t end = 0;
    bool empty() const { return end <= begin; }
};

// The range of each file the plan reads.
std::vector<FileSpan> spans_of(size_t num_files, const std::vector<CopyOp>& ops);

// The read mode (choose_read_mode) of each file over the span the ops read from it.
std::vector<ReadMode> read_modes(const std::vector<std::shared_ptr<MappedFile>>& files, const std::vector<CopyOp>& ops,
                                 ReadMethod method, double warm_fraction, bool direct_copies);

// Checks every operation (file index, bounds with overflow checks, dtype pair), then runs them
// all on the shared thread pool. Throws CheckpointError for a bad plan, IOError for a failed
// read. Plans run one at a time; each uses every core.
void execute_plan(const std::vector<std::shared_ptr<MappedFile>>& files, const std::vector<CopyOp>& ops,
                  const ExecuteOptions& options);

}  // namespace warpload
