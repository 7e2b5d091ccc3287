// progress.h — a byte counter that a running plan advances and another thread reads (a progress line).
#pragma once

#include <atomic>
#include <cstdint>

namespace warpload {

// Bytes of the source files a plan has finished with. Workers add as each chunk completes; the
// reader (Python, polling with the GIL held while the plan runs without it) loads it at any time.
// Relaxed ordering: the value only feeds a display, nothing is published through it.
class Progress {
public:
    void add(uint64_t nbytes) { bytes_.fetch_add(nbytes, std::memory_order_relaxed); }
    uint64_t bytes() const { return bytes_.load(std::memory_order_relaxed); }

private:
    std::atomic<uint64_t> bytes_{0};
};

// Adds to progress when there is one (callers pass nullptr when nobody watches).
inline void report(Progress* progress, uint64_t nbytes) {
    if (progress != nullptr) progress->add(nbytes);
}

}  // namespace warpload
