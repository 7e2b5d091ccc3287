// cuda.h — the CUDA runtime reached by dlopen at run time, and the pinned-ring pipeline that copies a plan to device memory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "engine.h"
#include "io.h"

namespace warpload {

// A CUDA runtime call failed (-> warpload.errors.CudaError). code is the cudaError_t value.
class CudaError : public std::runtime_error {
   public:
    CudaError(const std::string& what, int code) : std::runtime_error(what), code_(code) {}
    int code() const { return code_; }

   private:
    int code_;
};

// No CUDA runtime could be loaded, or it sees no GPU (-> warpload.errors.CudaUnavailableError).
class CudaUnavailableError : public std::runtime_error {
   public:
    using std::runtime_error::runtime_error;
};

// The handful of runtime functions the pipeline calls, resolved from one dlopen'ed libcudart.
// Opaque handles (cudaStream_t, cudaEvent_t) are pointers in every CUDA version.
struct CudaRuntime {
    using Stream = void*;
    using Event = void*;
    std::string path;
    int (*get_device_count)(int*);
    int (*get_device)(int*);
    int (*set_device)(int);
    int (*host_alloc)(void**, size_t, unsigned int);
    int (*free_host)(void*);
    int (*memcpy_async)(void*, const void*, size_t, int, Stream);
    int (*stream_create_with_flags)(Stream*, unsigned int);
    int (*stream_synchronize)(Stream);
    int (*stream_destroy)(Stream);
    int (*event_create_with_flags)(Event*, unsigned int);
    int (*event_record)(Event, Stream);
    int (*event_synchronize)(Event);
    int (*event_destroy)(Event);
    const char* (*get_error_string)(int);

    // Throws CudaError "<what>: <cudaGetErrorString> (CUDA error <code>)" when code is not 0.
    void check(int code, const std::string& what) const;
};

// The runtime of the first candidate that dlopens and has every function; loaded once per path
// and kept for the life of the process (unloading libcudart under live contexts is unsafe).
// Throws CudaUnavailableError listing each candidate and why it failed.
const CudaRuntime& load_cuda_runtime(const std::vector<std::string>& candidates);

// Number of GPUs the runtime sees; throws CudaUnavailableError when it sees none.
int cuda_device_count(const CudaRuntime& runtime);

struct CudaOptions {
    int device = 0;
    size_t buffer_bytes = size_t(32) << 20;  // one pinned buffer of the ring
    size_t num_buffers = 8;
    size_t num_streams = 4;
    size_t num_threads = 0;  // 0: one per available core
    ReadMethod method = ReadMethod::Auto;
    double warm_fraction = 1.0;  // as ExecuteOptions::warm_fraction
    // A destination at most coalesce_gap bytes after the previous one in the same buffer is sent
    // with the same copy, gap included, when both lie in one padded region (may_span_gap): memory
    // whose gaps are padding. Elsewhere a gap may be someone's memory. Rows merge as in coalesce.
    uint64_t coalesce_gap = 0;
    // Advanced by each batch's source bytes once its copies are queued; nullptr: nobody watches.
    Progress* progress = nullptr;
};

struct CudaStats {
    uint64_t bytes = 0;         // bytes copied to the device, coalesced padding included
    uint64_t batches = 0;       // ring buffers filled
    uint64_t copies = 0;        // cudaMemcpyAsync calls
    uint64_t reads = 0;         // pread / memcpy calls filling the ring
    uint64_t pinned_bytes = 0;  // size of the ring
    uint64_t mmap_files = 0;    // files read from the mapping (resident)
    uint64_t pread_files = 0;   // files read with pread (cold)
};

// Copies every operation (raw bytes: equal dtypes, no transposition) from its file to its place in
// its device region, once all are checked (resolve_plan). Reader threads of the shared pool fill a
// ring of pinned buffers; each full buffer goes to the device with cudaMemcpyAsync on one of a few
// streams, and is refilled only after the event recorded behind its copies has completed. All copies
// are complete when this returns, and the ring, streams and events are released whatever happens.
// Throws CheckpointError / DestinationError for a bad plan (before any byte moves), IOError for a
// failed read, CudaError for a failed CUDA call.
CudaStats execute_plan_cuda(const CudaRuntime& runtime, const std::vector<std::shared_ptr<MappedFile>>& files,
                            const std::vector<Region>& regions, std::vector<CopyOp> ops, const CudaOptions& options);

}  // namespace warpload
