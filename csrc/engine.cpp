// engine.cpp — plan validation, chunking, and the per-chunk copy/convert kernels of execute_plan.
#include "engine.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "convert.h"
#include "errors.h"
#include "thread_pool.h"

namespace warpload {

namespace {

// Destinations smaller than this gain nothing from huge-page advice.
constexpr uint64_t kHugePageAdviceMin = uint64_t(4) << 20;

struct Chunk {
    const CopyOp* op;
    uint64_t src_begin;  // relative to op->src_offset
    uint64_t src_len;
    bool use_pread;
};

std::vector<Chunk> split(const std::vector<CopyOp>& ops, const std::vector<ReadMode>& modes, size_t chunk_bytes) {
    std::vector<Chunk> chunks;
    chunks.reserve(ops.size());
    for (const CopyOp& op : ops) {
        if (op.src_nbytes == 0) continue;
        // Chunks end on element boundaries so each one converts independently; transposed
        // copies split on whole source rows.
        uint64_t step = std::max<uint64_t>(chunk_bytes / 8 * 8, 8);
        if (op.rows > 0) {
            uint64_t row_bytes = op.cols * itemsize(op.src_dtype);
            step = std::max<uint64_t>(step / row_bytes, 1) * row_bytes;
        }
        const ReadMode& mode = modes[op.file];
        // A byte-swapped copy reads through a bounce buffer, as a conversion does.
        bool use_pread = op.src_dtype == op.dst_dtype && op.swap == 0 ? mode.copy_via_pread : mode.bounce_via_pread;
        for (uint64_t begin = 0; begin < op.src_nbytes; begin += step) {
            chunks.push_back({&op, begin, std::min(step, op.src_nbytes - begin), use_pread});
        }
    }
    // Order by (file, offset) so threads taking chunks in turn read each file front to back.
    std::stable_sort(chunks.begin(), chunks.end(), [](const Chunk& a, const Chunk& b) {
        if (a.op->file != b.op->file) return a.op->file < b.op->file;
        return a.op->src_offset + a.src_begin < b.op->src_offset + b.src_begin;
    });
    return chunks;
}

// Per-thread scratch space, grown on demand and reused across chunks.
struct Scratch {
    std::vector<uint8_t> read;       // pread target for conversions and transposes
    std::vector<uint8_t> converted;  // converted rows awaiting transposition
};

const uint8_t* chunk_source(const MappedFile& file, uint64_t offset, uint64_t length, bool use_pread,
                            std::vector<uint8_t>& buffer) {
    if (!use_pread) return file.data() + offset;
    if (buffer.size() < length) buffer.resize(length);
    file.read_into(buffer.data(), offset, length);
    return buffer.data();
}

template <typename Element>
void transpose_rows(const uint8_t* src, uint64_t row_begin, uint64_t row_count, uint64_t rows, uint64_t cols,
                    uint8_t* dst) {
    // 32 x 32 tiles keep both the rows read and the columns written in L1.
    constexpr uint64_t kTile = 32;
    for (uint64_t r0 = 0; r0 < row_count; r0 += kTile) {
        uint64_t r1 = std::min(r0 + kTile, row_count);
        for (uint64_t c0 = 0; c0 < cols; c0 += kTile) {
            uint64_t c1 = std::min(c0 + kTile, cols);
            for (uint64_t r = r0; r < r1; ++r) {
                for (uint64_t c = c0; c < c1; ++c) {
                    Element value;
                    std::memcpy(&value, src + (r * cols + c) * sizeof(Element), sizeof(Element));
                    std::memcpy(dst + (c * rows + row_begin + r) * sizeof(Element), &value, sizeof(Element));
                }
            }
        }
    }
}

void copy_transposed_chunk(const MappedFile& file, const Chunk& chunk, Scratch& scratch) {
    const CopyOp& op = *chunk.op;
    const uint64_t row_bytes = op.cols * itemsize(op.src_dtype);
    const uint64_t row_begin = chunk.src_begin / row_bytes;
    const uint64_t row_count = chunk.src_len / row_bytes;
    const uint8_t* src = chunk_source(file, op.src_offset + chunk.src_begin, chunk.src_len, chunk.use_pread, scratch.read);
    if (op.src_dtype != op.dst_dtype) {
        size_t count = static_cast<size_t>(row_count * op.cols);
        if (scratch.converted.size() < count * itemsize(op.dst_dtype)) scratch.converted.resize(count * itemsize(op.dst_dtype));
        convert(src, op.src_dtype, scratch.converted.data(), op.dst_dtype, count);
        src = scratch.converted.data();
    }
    switch (itemsize(op.dst_dtype)) {
        case 8: transpose_rows<uint64_t>(src, row_begin, row_count, op.rows, op.cols, op.dst); break;
        case 4: transpose_rows<uint32_t>(src, row_begin, row_count, op.rows, op.cols, op.dst); break;
        case 2: transpose_rows<uint16_t>(src, row_begin, row_count, op.rows, op.cols, op.dst); break;
        default: transpose_rows<uint8_t>(src, row_begin, row_count, op.rows, op.cols, op.dst); break;
    }
}

// A big-endian chunk: its units byte-reversed into dst, or into scratch and then converted into dst.
void copy_swapped_chunk(const MappedFile& file, const Chunk& chunk, uint8_t* dst, Scratch& scratch) {
    const CopyOp& op = *chunk.op;
    const uint8_t* src =
        chunk_source(file, op.src_offset + chunk.src_begin, chunk.src_len, chunk.use_pread, scratch.read);
    if (op.src_dtype == op.dst_dtype) return byteswap_copy(src, dst, chunk.src_len, op.swap);
    if (scratch.converted.size() < chunk.src_len) scratch.converted.resize(chunk.src_len);
    byteswap_copy(src, scratch.converted.data(), chunk.src_len, op.swap);
    convert(scratch.converted.data(), op.src_dtype, dst, op.dst_dtype, chunk.src_len / itemsize(op.src_dtype));
}

void copy_chunk(const MappedFile& file, const Chunk& chunk, bool populate, Scratch& scratch) {
    const CopyOp& op = *chunk.op;
    if (op.rows > 0) return copy_transposed_chunk(file, chunk, scratch);
    const uint64_t offset = op.src_offset + chunk.src_begin;
    const size_t src_size = itemsize(op.src_dtype);
    uint8_t* dst = op.dst + chunk.src_begin / src_size * itemsize(op.dst_dtype);
    if (populate) populate_for_write(dst, chunk.src_len / src_size * itemsize(op.dst_dtype));
    if (op.swap > 0) return copy_swapped_chunk(file, chunk, dst, scratch);
    if (op.src_dtype == op.dst_dtype) {
        if (chunk.use_pread) {
            file.read_into(dst, offset, chunk.src_len);
        } else {
            std::memcpy(dst, file.data() + offset, chunk.src_len);
        }
        return;
    }
    const uint8_t* src = chunk_source(file, offset, chunk.src_len, chunk.use_pread, scratch.read);
    convert(src, op.src_dtype, dst, op.dst_dtype, chunk.src_len / src_size);
}

// The checks of an operation's source bytes: inside the file, whole elements, a known conversion,
// a transpose shape that matches them. Messages are built only on failure: a plan has thousands of rows.
void check_source(const MappedFile& file, const CopyOp& op, size_t row) {
    auto fail = [&](const std::string& what) {
        throw CheckpointError(file.path() + ": plan row " + std::to_string(row) + what, file.path(), op.src_offset);
    };
    uint64_t end = 0;
    if (__builtin_add_overflow(op.src_offset, op.src_nbytes, &end) || end > file.size()) {
        fail(" reads bytes [" + std::to_string(op.src_offset) + ", " + std::to_string(op.src_offset) + "+" +
             std::to_string(op.src_nbytes) + "), past the end of the file (" + std::to_string(file.size()) + " bytes)");
    }
    if (op.src_nbytes % itemsize(op.src_dtype) != 0) {
        fail(" copies " + std::to_string(op.src_nbytes) + " bytes at offset " + std::to_string(op.src_offset) +
             ", not a whole number of elements");
    }
    if (op.src_dtype != op.dst_dtype && !can_convert(op.src_dtype, op.dst_dtype)) {
        fail(": no conversion from dtype code " + std::to_string(static_cast<int>(op.src_dtype)) + " to " +
             std::to_string(static_cast<int>(op.dst_dtype)) + " (bytes at offset " + std::to_string(op.src_offset) + ")");
    }
    if (op.swap != 0 && (op.rows > 0 || (op.swap != 2 && op.swap != 4 && op.swap != 8) ||
                         itemsize(op.src_dtype) % op.swap != 0)) {
        fail(" byte-swaps units of " + std::to_string(op.swap) + " bytes in elements of " +
             std::to_string(itemsize(op.src_dtype)) + " bytes" + (op.rows > 0 ? ", transposed" : "") +
             " (bytes at offset " + std::to_string(op.src_offset) + "): units are 2, 4 or 8 bytes, within an "
             "element, and never transposed");
    }
    if (op.rows > 0 || op.cols > 0) {
        uint64_t elements = op.src_nbytes / itemsize(op.src_dtype);
        if (op.rows == 0 || op.cols == 0 || op.cols > elements / op.rows || op.rows * op.cols != elements) {
            fail(" transposes a " + std::to_string(op.rows) + " x " + std::to_string(op.cols) + " matrix but copies " +
                 std::to_string(elements) + " elements at offset " + std::to_string(op.src_offset));
        }
    }
}

// The check that keeps the engine memory-safe: the bytes an operation writes lie inside its region.
// Runs after check_source, so the element count is whole; the byte count is still overflow-checked.
void check_destination(const MappedFile& file, const std::vector<Region>& regions, const CopyOp& op, size_t row) {
    uint64_t nbytes = 0;
    if (__builtin_mul_overflow(op.src_nbytes / itemsize(op.src_dtype), itemsize(op.dst_dtype), &nbytes)) {
        nbytes = UINT64_MAX;
    }
    const uint64_t size = op.region < regions.size() ? regions[op.region].size : 0;
    uint64_t end = 0;
    if (op.region < regions.size() && !__builtin_add_overflow(op.dst_offset, nbytes, &end) && end <= size) return;
    const std::string region = "destination region " + std::to_string(op.region);
    const std::string what =
        op.region < regions.size()
            ? region + ", which has " + std::to_string(size) + " bytes"
            : region + ", but the plan has " + std::to_string(regions.size()) + " regions";
    throw DestinationError(file.path() + ": plan row " + std::to_string(row) + " would write " + std::to_string(nbytes) +
                               " bytes at offset " + std::to_string(op.dst_offset) + " of " + what +
                               "; nothing was written",
                           row, op.region, op.dst_offset, nbytes, size, file.path());
}

// Whether op can be copied as the continuation of last (the rule coalesce documents).
bool extends(const CopyOp& last, const CopyOp& op, const std::vector<Region>& regions, uint64_t max_gap) {
    if (last.file != op.file || last.region != op.region || last.src_dtype != op.src_dtype ||
        last.dst_dtype != op.dst_dtype || last.swap != op.swap || last.rows > 0 || op.rows > 0) {
        return false;
    }
    const uint64_t src_end = last.src_offset + last.src_nbytes;
    const uint64_t dst_end = last.dst_offset + dst_nbytes(last);
    if (op.src_offset < src_end || op.dst_offset < dst_end || op.dst_offset - dst_end != op.src_offset - src_end) {
        return false;
    }
    const uint64_t gap = op.src_offset - src_end;
    if (gap == 0) return true;
    return op.src_dtype == op.dst_dtype && gap % itemsize(op.src_dtype) == 0 &&
           may_span_gap(regions[op.region], gap, max_gap);
}

}  // namespace

void resolve_plan(const std::vector<std::shared_ptr<MappedFile>>& files, const std::vector<Region>& regions,
                  std::vector<CopyOp>& ops) {
    for (size_t i = 0; i < ops.size(); ++i) {
        const MappedFile& file = file_at(files, ops[i].file, "plan row", i);
        check_source(file, ops[i], i);
        check_destination(file, regions, ops[i], i);
        ops[i].dst = regions[ops[i].region].base + ops[i].dst_offset;
    }
}

std::vector<CopyOp> coalesce(const std::vector<CopyOp>& ops, const std::vector<Region>& regions, uint64_t max_gap) {
    std::vector<CopyOp> merged;
    merged.reserve(ops.size());
    for (const CopyOp& op : ops) {
        if (!merged.empty() && extends(merged.back(), op, regions, max_gap)) {
            merged.back().src_nbytes = op.src_offset + op.src_nbytes - merged.back().src_offset;
        } else {
            merged.push_back(op);
        }
    }
    return merged;
}

std::vector<FileSpan> spans_of(size_t num_files, const std::vector<CopyOp>& ops) {
    std::vector<FileSpan> spans(num_files);
    for (const CopyOp& op : ops) {
        if (op.src_nbytes == 0) continue;
        spans[op.file].begin = std::min(spans[op.file].begin, op.src_offset);
        spans[op.file].end = std::max(spans[op.file].end, op.src_offset + op.src_nbytes);
    }
    return spans;
}

std::vector<ReadMode> read_modes(const std::vector<std::shared_ptr<MappedFile>>& files, const std::vector<CopyOp>& ops,
                                 ReadMethod method, double warm_fraction, bool direct_copies) {
    std::vector<FileSpan> spans = spans_of(files.size(), ops);
    std::vector<ReadMode> modes(files.size());
    for (size_t f = 0; f < files.size(); ++f) {
        if (spans[f].empty()) continue;
        modes[f] = choose_read_mode(*files[f], spans[f].begin, spans[f].end - spans[f].begin, method, warm_fraction,
                                    direct_copies);
    }
    return modes;
}

ExecuteStats execute_plan(const std::vector<std::shared_ptr<MappedFile>>& files, const std::vector<Region>& regions,
                          std::vector<CopyOp> ops, const ExecuteOptions& options) {
    resolve_plan(files, regions, ops);
    ops = coalesce(ops, regions, options.coalesce_gap);
    std::vector<ReadMode> modes = read_modes(files, ops, options.method, options.warm_fraction, true);
    ExecuteStats stats;
    for (const CopyOp& op : ops) {
        stats.copies += 1;
        stats.bytes += dst_nbytes(op);
        if (options.huge_pages && dst_nbytes(op) >= kHugePageAdviceMin) advise_hugepages(op.dst, dst_nbytes(op));
    }
    std::vector<Chunk> chunks = split(ops, modes, options.chunk_bytes);

    PoolLease pool(options.num_threads);
    std::vector<Scratch> scratch(pool.workers());
    pool.run(chunks.size(), [&](size_t i, size_t worker) {
        copy_chunk(*files[chunks[i].op->file], chunks[i], options.populate, scratch[worker]);
        report(options.progress, chunks[i].src_len);
    });
    return stats;
}

}  // namespace warpload
