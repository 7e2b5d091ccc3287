// writer.h — writes a safetensors file (or its bytes) from a header and tensor buffers, in parallel.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace warpload {

// nbytes of memory at src, written at byte `offset` of the output (the 8-byte length and the header
// come first; the caller places the tensors after them, back to back, as safetensors does).
struct WritePiece {
    const uint8_t* src;
    uint64_t nbytes;
    uint64_t offset;
};

// How bytes reach the file. Pwrite: each thread pwritev()s its chunks of the file; Sequential: one
// thread, one pass of pwritev; Mmap: the file is mapped shared and filled with memcpy by every thread.
// Buffered writes to one file take the inode's lock (ext4, xfs), so threads queue on it; mapped pages
// fault in one by one. python/warpload/engine/writer.py picks by measurement (benchmarks/save.py).
enum class WriteMethod : int32_t { Pwrite = 0, Sequential = 1, Mmap = 2 };

struct WriteOptions {
    WriteMethod method = WriteMethod::Pwrite;
    size_t num_threads = 0;                // 0: one per available core
    size_t chunk_bytes = size_t(8) << 20;  // bytes of the output one task writes
};

// Checks that the pieces tile [0, total) exactly: sorted by offset, each starting where the one
// before ends (no gap, no overlap), with no arithmetic overflow, so no write lands outside the
// output. Throws std::invalid_argument naming the piece otherwise.
void check_pieces(const std::vector<WritePiece>& pieces, uint64_t total);

// Creates path (or reuses it, resized) and writes the pieces into it, sized to `total`. Throws IOError with
// path and offset when the system refuses a write (a full disk, a quota), invalid_argument for pieces
// that do not tile [0, total). The caller renames the file into place (python/warpload/_fileio.py).
void write_pieces_to_file(const std::string& path, const std::vector<WritePiece>& pieces, uint64_t total,
                          const WriteOptions& options);

// Copies the pieces into dst, which has `total` bytes, in parallel (the bytes of safetensors' save()).
void write_pieces_to_memory(uint8_t* dst, const std::vector<WritePiece>& pieces, uint64_t total,
                            const WriteOptions& options);

}  // namespace warpload
