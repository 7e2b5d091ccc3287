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

// Memory a plan writes into: bytes [base, base + size), which the caller owns for the call. padded:
// the bytes between the plan's destinations in it are padding (the plan's own buffer), so one copy
// may span the gap between two destinations instead of stopping at it.
struct Region {
    uint8_t* base = nullptr;
    uint64_t size = 0;
    bool padded = false;
};

// One planned copy: src_nbytes of files[file] at src_offset, in src_dtype, written as dst_dtype
// (dst_nbytes(op) bytes) at dst_offset of regions[region]. Equal dtypes copy raw bytes.
// With rows > 0 the source is a row-major rows x cols matrix and the destination receives its
// transpose (cols x rows), as TF -> PyTorch weight mapping needs; the transposition happens per
// chunk of source rows, in parallel, with no full-size temporary. With swap > 0 the source is
// big-endian: each swap-byte unit (an element, or a complex number's component) is byte-reversed
// while it is copied, before any conversion, as torch.load does for archives saved with byteorder 'big'.
struct CopyOp {
    uint32_t file;
    uint64_t src_offset;
    uint64_t src_nbytes;
    DType src_dtype;
    uint32_t region;
    uint64_t dst_offset;
    DType dst_dtype;
    uint64_t rows = 0;
    uint64_t cols = 0;
    uint32_t swap = 0;       // 0 (bytes as stored), 2, 4 or 8
    uint8_t* dst = nullptr;  // regions[region].base + dst_offset, set by resolve_plan once the op is checked
};

// Bytes an operation writes; within range once resolve_plan has accepted it.
inline uint64_t dst_nbytes(const CopyOp& op) {
    return op.src_nbytes / itemsize(op.src_dtype) * itemsize(op.dst_dtype);
}

struct ExecuteOptions {
    ReadMethod method = ReadMethod::Auto;
    // A file with less of its span in the page cache than this is cold (choose_read_mode); the
    // caller passes python/warpload/constants.py MAP_WARM_FRACTION.
    double warm_fraction = 1.0;
    // Rows merge across gaps of at most this many bytes in padded regions (coalesce).
    uint64_t coalesce_gap = 0;
    size_t num_threads = 0;             // 0: one per available core
    size_t chunk_bytes = size_t(4) << 20;  // work unit handed to one thread
    // Advise destinations of 4 MiB and more for transparent huge pages. A win on bare metal; a
    // loss in VMs that hand free memory back to the host (python/warpload/engine/machine.py decides).
    bool huge_pages = false;
    // Fault each chunk's destination in with one MADV_POPULATE_WRITE before copying into it.
    bool populate = true;
    // Advanced by each chunk's source bytes as it completes; nullptr: nobody watches.
    Progress* progress = nullptr;
};

// Checks every operation before any byte moves: file index, source bounds, element size, dtype
// pair, transpose shape, and that the bytes it writes lie inside its region, all with overflow-checked
// arithmetic. Then points each op's dst into its region. Throws CheckpointError naming the operation
// and file for a bad source, DestinationError for a write outside its region.
void resolve_plan(const std::vector<std::shared_ptr<MappedFile>>& files, const std::vector<Region>& regions,
                  std::vector<CopyOp>& ops);

// Whether a copy may also write the `gap` bytes that follow one destination in region: none, or,
// when the region is padded, at most max_gap. The one rule for copies spanning gaps (coalesce here,
// the CUDA ring's shared copies in cuda.cpp).
inline bool may_span_gap(const Region& region, uint64_t gap, uint64_t max_gap) {
    return gap == 0 || (region.padded && gap <= max_gap);
}

// Resolved operations with each one merged into the one before it when one copy does both: same
// file, region and dtype pair, neither transposed, and the same gap after the previous one in the
// file as in memory, which may_span_gap allows (a gap of whole elements of a plain copy is copied
// from the file). Merged operations stay in bounds: they span two checked ones.
std::vector<CopyOp> coalesce(const std::vector<CopyOp>& ops, const std::vector<Region>& regions, uint64_t max_gap);

// The byte range of one file a plan reads (empty when it reads none).
struct FileSpan {
    uint64_t begin = UINT64_MAX;
    uint64_t end = 0;
    bool empty() const { return end <= begin; }
};

// The range of each file the plan reads.
std::vector<FileSpan> spans_of(size_t num_files, const std::vector<CopyOp>& ops);

// The read mode (choose_read_mode) of each file over the span the resolved ops read from it.
std::vector<ReadMode> read_modes(const std::vector<std::shared_ptr<MappedFile>>& files, const std::vector<CopyOp>& ops,
                                 ReadMethod method, double warm_fraction, bool direct_copies);

struct ExecuteStats {
    uint64_t copies = 0;  // operations after coalescing
    uint64_t bytes = 0;   // bytes written, gaps spanned included
};

// Resolves and coalesces the operations, then runs them all on the shared thread pool. Throws
// CheckpointError / DestinationError for a bad plan (before any byte moves), IOError for a failed
// read. Plans run one at a time; each uses every core.
ExecuteStats execute_plan(const std::vector<std::shared_ptr<MappedFile>>& files, const std::vector<Region>& regions,
                          std::vector<CopyOp> ops, const ExecuteOptions& options);

}  // namespace warpload
