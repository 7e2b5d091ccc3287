// errors.h — the C++ exception types that bindings.cpp turns into warpload.errors classes.
#pragma once

#include <stdexcept>
#include <string>

namespace warpload {

// Input that is wrong: out-of-bounds ranges, bad plan entries (-> CheckpointError).
class CheckpointError : public std::runtime_error {
   public:
    using std::runtime_error::runtime_error;
};

// The operating system refused or failed an operation (-> EngineIOError, an OSError).
class IOError : public std::runtime_error {
   public:
    IOError(const std::string& what, int errno_value) : std::runtime_error(what), errno_value_(errno_value) {}
    int errno_value() const { return errno_value_; }

   private:
    int errno_value_;
};

// Builds "what: strerror(errno)" for a failed system call.
std::string describe_errno(const std::string& what, int errno_value);

}  // namespace warpload
