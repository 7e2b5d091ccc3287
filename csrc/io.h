// io.h — files for reading: an fd plus a private read-only-backed mapping, residency and cache hints.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "progress.h"

namespace warpload {

// An open checkpoint file. The whole file is mapped MAP_PRIVATE with PROT_READ|PROT_WRITE so
// zero-copy tensors are writable (copy-on-write: writes never reach the file), as safetensors
// does. Owns the fd and the mapping (RAII); not copyable.
class MappedFile {
   public:
    explicit MappedFile(const std::string& path);
    ~MappedFile();
    MappedFile(const MappedFile&) = delete;
    MappedFile& operator=(const MappedFile&) = delete;

    const std::string& path() const { return path_; }
    uint64_t size() const { return size_; }
    int fd() const { return fd_; }
    // nullptr for an empty file.
    uint8_t* data() const { return data_; }

    // Fraction of the pages of [offset, offset+nbytes) present in the page cache (mincore).
    double resident_fraction(uint64_t offset, uint64_t nbytes) const;
    // Reads exactly nbytes at offset into dst with pread, retrying short reads and EINTR.
    void read_into(void* dst, uint64_t offset, uint64_t nbytes) const;
    // Hints for a range about to be read; failures are ignored (they are only hints).
    // For pread: posix_fadvise(SEQUENTIAL) doubles the kernel's readahead window.
    void advise_sequential_reads(uint64_t offset, uint64_t nbytes) const;
    // For copies from the mapping: madvise(WILLNEED) starts reading the range in the background.
    void advise_mapping_willneed(uint64_t offset, uint64_t nbytes) const;

   private:
    std::string path_;
    int fd_ = -1;
    uint64_t size_ = 0;
    uint8_t* data_ = nullptr;
};

// files[index], which must exist: throws CheckpointError "<what> <number>: ..." (say, "plan row 3")
// for an index past the end or a null file (None passed for a File), so no caller dereferences one.
const MappedFile& file_at(const std::vector<std::shared_ptr<MappedFile>>& files, uint64_t index, const char* what,
                          size_t number);

// How bytes leave the file. Auto reads plain copies with pread straight into the destination
// (measured here on fresh memory: 10-40% faster than memcpy from the mapping, which also pays a
// page fault per 64 KiB of source). Bytes that pass through a buffer first (a conversion, the CUDA
// ring) are read from the mapping when the file is in the page cache (mincore), so no extra copy is
// made, and with pread when it is cold, so the kernel reads ahead in large requests.
enum class ReadMethod : int32_t { Auto = 0, Mmap = 1, Pread = 2 };

// How one file's bytes are read, decided once per plan.
struct ReadMode {
    bool cold = false;              // less than warm_fraction of the span is in the page cache
    bool copy_via_pread = true;     // plain copies: pread into the destination, else memcpy from the mapping
    bool bounce_via_pread = false;  // bytes through a buffer: pread into it, else read from the mapping
};

// The read mode of bytes [begin, begin+length) of file under method: the file is cold when less than
// warm_fraction of them is in the page cache (the caller's threshold, python/warpload/constants.py
// MAP_WARM_FRACTION). Gives the kernel the readahead hint that matches a cold file's reads; with
// direct_copies false no byte goes straight to a destination, so only the bounce mode is used.
ReadMode choose_read_mode(const MappedFile& file, uint64_t begin, uint64_t length, ReadMethod method,
                          double warm_fraction, bool direct_copies);

// Drops the file's pages from the page cache (POSIX_FADV_DONTNEED), for cold-cache benchmarks.
void evict_from_page_cache(const std::string& path);

// Anonymous memory, zero-filled lazily by the kernel on first touch: the destination of
// owned-memory loads. With huge_pages it starts 2 MiB-aligned and is advised for transparent huge
// pages (THP "madvise" mode); without, it is advised against them.
class HostBuffer {
   public:
    HostBuffer(size_t nbytes, bool huge_pages);
    ~HostBuffer();
    HostBuffer(const HostBuffer&) = delete;
    HostBuffer& operator=(const HostBuffer&) = delete;

    uint8_t* data() const { return data_; }
    size_t size() const { return size_; }

   private:
    uint8_t* data_ = nullptr;
    size_t size_ = 0;
    size_t mapped_ = 0;
};

// Asks for huge pages on the 2 MiB-aligned interior of [ptr, ptr+nbytes) before it is touched.
void advise_hugepages(void* ptr, size_t nbytes);

// Faults in every page of [ptr, ptr+nbytes) for writing in one call (MADV_POPULATE_WRITE, Linux
// 5.14+; a no-op before), instead of one page fault per 4 KiB page during the copy.
void populate_for_write(void* ptr, size_t nbytes);

// Bytes [offset, offset+nbytes) of files[file], for prefault_ranges.
struct FileRange {
    uint32_t file;
    uint64_t offset;
    uint64_t nbytes;
};

// Enters every page of the ranges into the page tables of the files' mappings, in 8 MiB chunks
// spread over the shared thread pool (num_threads as for execute_plan): tensors viewing the
// mappings are then used without one page fault per 4 KiB. A chunk not wholly in the page cache
// (mincore) is first read with pread, so a cold file is read in parallel, sequentially per chunk.
// Maps with MADV_POPULATE_READ (Linux 5.14+) when use_madvise and the kernel has it, else reads
// one byte per page. Returns whether MADV_POPULATE_READ did the work. Throws CheckpointError for a
// range outside its file, IOError when the kernel cannot read a page (the file shrank, a disk error).
// `progress` (may be nullptr) is advanced by each chunk's bytes as it is mapped.
bool prefault_ranges(const std::vector<std::shared_ptr<MappedFile>>& files, const std::vector<FileRange>& ranges,
                     size_t num_threads, bool use_madvise, Progress* progress = nullptr);

}  // namespace warpload
