// errors.h — the C++ exception types that bindings.cpp turns into warpload.errors classes.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

namespace warpload {

// The offset of an error that has none (an open or an allocation that failed): None in Python.
constexpr uint64_t kNoOffset = UINT64_MAX;

// Input that is wrong: out-of-bounds ranges, bad plan entries (-> CheckpointError). path and offset
// say where, when known (empty, kNoOffset otherwise); Python gets them as the exception's attributes.
class CheckpointError : public std::runtime_error {
   public:
    explicit CheckpointError(const std::string& what, std::string path = {}, uint64_t offset = kNoOffset)
        : std::runtime_error(what), path_(std::move(path)), offset_(offset) {}
    const std::string& path() const { return path_; }
    uint64_t offset() const { return offset_; }

   private:
    std::string path_;
    uint64_t offset_;
};

// The operating system refused or failed an operation (-> EngineIOError, an OSError), with the file
// and byte offset it was working on when known.
class IOError : public std::runtime_error {
   public:
    IOError(const std::string& what, int errno_value, std::string path = {}, uint64_t offset = kNoOffset)
        : std::runtime_error(what), errno_value_(errno_value), path_(std::move(path)), offset_(offset) {}
    int errno_value() const { return errno_value_; }
    const std::string& path() const { return path_; }
    uint64_t offset() const { return offset_; }

   private:
    int errno_value_;
    std::string path_;
    uint64_t offset_;
};

// A plan row that would write outside the destination regions its caller gave (-> DestinationError, a
// ValueError): a bug in the caller, found before any byte moved. row is the row's index in the plan,
// offset and nbytes the bytes it would write in region `region` of region_size bytes; path is its source file.
class DestinationError : public std::runtime_error {
   public:
    DestinationError(const std::string& what, size_t row, uint64_t region, uint64_t offset, uint64_t nbytes,
                     uint64_t region_size, std::string path)
        : std::runtime_error(what),
          row_(row), region_(region), offset_(offset), nbytes_(nbytes), region_size_(region_size),
          path_(std::move(path)) {}
    size_t row() const { return row_; }
    uint64_t region() const { return region_; }
    uint64_t offset() const { return offset_; }
    uint64_t nbytes() const { return nbytes_; }
    uint64_t region_size() const { return region_size_; }
    const std::string& path() const { return path_; }

   private:
    size_t row_;
    uint64_t region_, offset_, nbytes_, region_size_;
    std::string path_;
};

// Throws IOError "what: strerror(errno_value)". Callers capture errno into errno_value first thing
// after the failed call: building the message allocates, and an allocation may change errno.
[[noreturn]] void throw_io_error(const std::string& what, int errno_value, const std::string& path = {},
                                 uint64_t offset = kNoOffset);

}  // namespace warpload
