// engine.cpp — plan validation, chunking, and the per-chunk copy/convert kernels of execute_plan.
#include "engine.h"

#include <algorithm>
#include <cstring>
#include <mutex>
#include <string>

#include "convert.h"
#include "errors.h"
#include "thread_pool.h"

namespace warpload {

namespace {

// Below this a file is treated as cold: converting from the mapping would page-fault on nearly
// every 64 KiB of source, and pread lets the kernel read ahead in large requests.
constexpr double kWarmFraction = 0.9;
// Destinations smaller than this gain nothing from huge-page advice.
constexpr uint64_t kHugePageAdviceMin = uint64_t(4) << 20;

struct Chunk {
    const CopyOp* op;
    uint64_t src_begin;  // relative to op->src_offset
    uint64_t src_len;
    bool use_pread;
};

void validate(const std::vector<std::shared_ptr<MappedFile>>& files, const std::vector<CopyOp>& ops) {
    for (size_t i = 0; i < ops.size(); ++i) {
        const CopyOp& op = ops[i];
        const std::string where = "plan operation " + std::to_string(i);
        if (op.file >= files.size()) {
            throw CheckpointError(where + ": file index " + std::to_string(op.file) + " but the plan has " +
                                  std::to_string(files.size()) + " files");
        }
        const MappedFile& file = *files[op.file];
        uint64_t end = op.src_offset + op.src_nbytes;
        if (end < op.src_offset || end > file.size()) {
            throw CheckpointError(file.path() + ": " + where + " reads bytes [" + std::to_string(op.src_offset) +
                                  ", " + std::to_string(op.src_offset) + "+" + std::to_string(op.src_nbytes) +
                                  "), past the end of the file (" + std::to_string(file.size()) + " bytes)");
        }
        if (op.src_nbytes % itemsize(op.src_dtype) != 0) {
            throw CheckpointError(file.path() + ": " + where + " copies " + std::to_string(op.src_nbytes) +
                                  " bytes, not a whole number of elements");
        }
        if (op.src_dtype != op.dst_dtype && !can_convert(op.src_dtype, op.dst_dtype)) {
            throw CheckpointError(where + ": no conversion from dtype code " +
                                  std::to_string(static_cast<int>(op.src_dtype)) + " to " +
                                  std::to_string(static_cast<int>(op.dst_dtype)));
        }
        if (op.src_nbytes > 0 && op.dst == nullptr) throw CheckpointError(where + ": null destination");
    }
}

struct FileSpan {
    uint64_t begin = UINT64_MAX;
    uint64_t end = 0;
    bool empty() const { return end <= begin; }
};

// The range of each file the plan reads.
std::vector<FileSpan> spans_of(size_t num_files, const std::vector<CopyOp>& ops) {
    std::vector<FileSpan> spans(num_files);
    for (const CopyOp& op : ops) {
        if (op.src_nbytes == 0) continue;
        spans[op.file].begin = std::min(spans[op.file].begin, op.src_offset);
        spans[op.file].end = std::max(spans[op.file].end, op.src_offset + op.src_nbytes);
    }
    return spans;
}

// How each file's bytes are read, decided once per plan.
struct FileReadMode {
    bool convert_via_pread = false;  // conversions: pread into a bounce buffer, else the mapping
    bool copy_via_pread = true;      // plain copies: pread into the destination, else memcpy
};

// Decides per file how its bytes are read, and gives the kernel the matching hint.
std::vector<FileReadMode> choose_read_modes(const std::vector<std::shared_ptr<MappedFile>>& files,
                                            const std::vector<FileSpan>& spans, ReadMethod method) {
    std::vector<FileReadMode> modes(files.size());
    for (size_t f = 0; f < files.size(); ++f) {
        const FileSpan& span = spans[f];
        if (span.empty()) continue;
        uint64_t length = span.end - span.begin;
        FileReadMode& mode = modes[f];
        bool cold = files[f]->resident_fraction(span.begin, length) < kWarmFraction;
        mode.copy_via_pread = method != ReadMethod::Mmap;
        mode.convert_via_pread = method == ReadMethod::Pread || (method == ReadMethod::Auto && cold);
        if (!cold) continue;
        if (mode.copy_via_pread || mode.convert_via_pread) files[f]->advise_sequential_reads(span.begin, length);
        if (!mode.copy_via_pread || !mode.convert_via_pread) files[f]->advise_mapping_willneed(span.begin, length);
    }
    return modes;
}

std::vector<Chunk> split(const std::vector<CopyOp>& ops, const std::vector<FileReadMode>& modes,
                         size_t chunk_bytes) {
    std::vector<Chunk> chunks;
    chunks.reserve(ops.size());
    for (const CopyOp& op : ops) {
        if (op.src_nbytes == 0) continue;
        // Chunks end on element boundaries so each one converts independently.
        uint64_t step = std::max<uint64_t>(chunk_bytes / 8 * 8, 8);
        const FileReadMode& mode = modes[op.file];
        bool use_pread = op.src_dtype == op.dst_dtype ? mode.copy_via_pread : mode.convert_via_pread;
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

void copy_chunk(const MappedFile& file, const Chunk& chunk, bool populate, std::vector<uint8_t>& bounce) {
    const CopyOp& op = *chunk.op;
    const uint64_t offset = op.src_offset + chunk.src_begin;
    const size_t src_size = itemsize(op.src_dtype);
    uint8_t* dst = op.dst + chunk.src_begin / src_size * itemsize(op.dst_dtype);
    if (populate) populate_for_write(dst, chunk.src_len / src_size * itemsize(op.dst_dtype));
    if (op.src_dtype == op.dst_dtype) {
        if (chunk.use_pread) {
            file.read_into(dst, offset, chunk.src_len);
        } else {
            std::memcpy(dst, file.data() + offset, chunk.src_len);
        }
        return;
    }
    const uint8_t* src = file.data() + offset;
    if (chunk.use_pread) {
        if (bounce.size() < chunk.src_len) bounce.resize(chunk.src_len);
        file.read_into(bounce.data(), offset, chunk.src_len);
        src = bounce.data();
    }
    convert(src, op.src_dtype, dst, op.dst_dtype, chunk.src_len / src_size);
}

}  // namespace

void execute_plan(const std::vector<std::shared_ptr<MappedFile>>& files, const std::vector<CopyOp>& ops,
                  const ExecuteOptions& options) {
    validate(files, ops);
    std::vector<FileReadMode> modes = choose_read_modes(files, spans_of(files.size(), ops), options.method);
    if (options.huge_pages) {
        for (const CopyOp& op : ops) {
            uint64_t dst_nbytes = op.src_nbytes / itemsize(op.src_dtype) * itemsize(op.dst_dtype);
            if (dst_nbytes >= kHugePageAdviceMin) advise_hugepages(op.dst, dst_nbytes);
        }
    }
    std::vector<Chunk> chunks = split(ops, modes, options.chunk_bytes);

    static std::mutex one_plan_at_a_time;
    std::lock_guard<std::mutex> lock(one_plan_at_a_time);
    ThreadPool& pool = shared_pool(options.num_threads);
    std::vector<std::vector<uint8_t>> bounce(pool.size());
    pool.run(chunks.size(), [&](size_t i, size_t worker) {
        copy_chunk(*files[chunks[i].op->file], chunks[i], options.populate, bounce[worker]);
    });
}

}  // namespace warpload
