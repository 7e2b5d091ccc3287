// cuda.cpp — dlopen of libcudart, and execute_plan_cuda: reads into a ring of pinned buffers, copies to the device on streams.
#include "cuda.h"

#include <dlfcn.h>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <map>
#include <mutex>

#include "errors.h"
#include "thread_pool.h"

namespace warpload {

namespace {

// driver_types.h: cudaMemcpyHostToDevice; cudaStreamNonBlocking (no implicit sync with the legacy
// default stream torch may use); cudaEventDisableTiming (cheapest events); cudaHostAllocDefault.
constexpr int kMemcpyHostToDevice = 1;
constexpr unsigned int kStreamNonBlocking = 0x01;
constexpr unsigned int kEventDisableTiming = 0x02;
constexpr unsigned int kHostAllocDefault = 0x00;

template <typename Function>
bool resolve(void* handle, const char* name, Function& out, std::string& missing) {
    out = reinterpret_cast<Function>(::dlsym(handle, name));
    if (out == nullptr) missing += std::string(missing.empty() ? "" : ", ") + name;
    return out != nullptr;
}

// Resolves every function of the table from handle; returns the names it lacks (empty if none).
std::string resolve_all(void* handle, CudaRuntime& rt) {
    std::string missing;
    resolve(handle, "cudaGetDeviceCount", rt.get_device_count, missing);
    resolve(handle, "cudaGetDevice", rt.get_device, missing);
    resolve(handle, "cudaSetDevice", rt.set_device, missing);
    resolve(handle, "cudaHostAlloc", rt.host_alloc, missing);
    resolve(handle, "cudaFreeHost", rt.free_host, missing);
    resolve(handle, "cudaMemcpyAsync", rt.memcpy_async, missing);
    resolve(handle, "cudaStreamCreateWithFlags", rt.stream_create_with_flags, missing);
    resolve(handle, "cudaStreamSynchronize", rt.stream_synchronize, missing);
    resolve(handle, "cudaStreamDestroy", rt.stream_destroy, missing);
    resolve(handle, "cudaEventCreateWithFlags", rt.event_create_with_flags, missing);
    resolve(handle, "cudaEventRecord", rt.event_record, missing);
    resolve(handle, "cudaEventSynchronize", rt.event_synchronize, missing);
    resolve(handle, "cudaEventDestroy", rt.event_destroy, missing);
    resolve(handle, "cudaGetErrorString", rt.get_error_string, missing);
    return missing;
}

// One contiguous piece of a file read into a ring buffer.
struct Read {
    uint32_t file;
    uint64_t src_offset;
    uint64_t length;
    uint64_t buffer_offset;
};

// One cudaMemcpyAsync from a ring buffer to the device.
struct Copy {
    uint64_t buffer_offset;
    uint8_t* dst;
    uint64_t length;
    uint32_t region;
};

// What one ring buffer carries: the reads that fill it and the copies that empty it.
struct Batch {
    std::vector<Read> reads;
    std::vector<Copy> copies;
    uint64_t used = 0;
};

// Where in the batch's buffer bytes bound for dst go: right after the last copy, or, when dst follows
// that copy's destination in the same region across a gap a copy may span, as far after it, so one
// copy sends both.
uint64_t place_in(const Batch& batch, const CopyOp& op, uint8_t* dst, const std::vector<Region>& regions,
                  uint64_t buffer_bytes, uint64_t max_gap, bool& extends) {
    extends = false;
    if (batch.copies.empty() || batch.copies.back().region != op.region) return batch.used;
    const Copy& last = batch.copies.back();
    uint8_t* last_end = last.dst + last.length;
    if (dst < last_end) return batch.used;
    const uint64_t gap = static_cast<uint64_t>(dst - last_end);
    if (!may_span_gap(regions[op.region], gap, max_gap) || batch.used + gap >= buffer_bytes) return batch.used;
    extends = true;
    return batch.used + gap;
}

// Packs the resolved operations, in (file, offset) order, into buffers of buffer_bytes: small ones
// share a buffer (and one copy, when their destinations are close in a padded region), large ones
// are split over several buffers.
std::vector<Batch> pack(const std::vector<CopyOp>& ops, const std::vector<Region>& regions, uint64_t buffer_bytes,
                        uint64_t max_gap) {
    std::vector<const CopyOp*> order;
    for (const CopyOp& op : ops) {
        if (op.src_nbytes > 0) order.push_back(&op);
    }
    std::stable_sort(order.begin(), order.end(), [](const CopyOp* a, const CopyOp* b) {
        return a->file != b->file ? a->file < b->file : a->src_offset < b->src_offset;
    });
    std::vector<Batch> batches;
    for (const CopyOp* op : order) {
        uint64_t done = 0;
        while (done < op->src_nbytes) {
            if (batches.empty() || batches.back().used == buffer_bytes) batches.emplace_back();
            Batch& batch = batches.back();
            uint8_t* dst = op->dst + done;
            bool extends = false;
            const uint64_t place = place_in(batch, *op, dst, regions, buffer_bytes, max_gap, extends);
            uint64_t take = std::min(op->src_nbytes - done, buffer_bytes - place);
            Read read{op->file, op->src_offset + done, take, place};
            if (!batch.reads.empty()) {
                Read& last = batch.reads.back();
                if (last.file == read.file && last.src_offset + last.length == read.src_offset &&
                    last.buffer_offset + last.length == read.buffer_offset) {
                    last.length += take;
                } else {
                    batch.reads.push_back(read);
                }
            } else {
                batch.reads.push_back(read);
            }
            if (extends) {
                Copy& last = batch.copies.back();
                last.length = place + take - last.buffer_offset;
            } else {
                batch.copies.push_back({place, dst, take, op->region});
            }
            batch.used = place + take;
            done += take;
        }
    }
    return batches;
}

// Restores the calling thread's current device on exit: torch reads it with cudaGetDevice.
class DeviceGuard {
   public:
    DeviceGuard(const CudaRuntime& rt, int device) : rt_(rt) {
        rt.check(rt.get_device(&previous_), "cudaGetDevice");
        rt.check(rt.set_device(device), "cudaSetDevice(" + std::to_string(device) + ")");
    }
    ~DeviceGuard() { rt_.set_device(previous_); }
    DeviceGuard(const DeviceGuard&) = delete;
    DeviceGuard& operator=(const DeviceGuard&) = delete;

   private:
    const CudaRuntime& rt_;
    int previous_ = 0;
};

// The ring and its streams and events. The destructor waits for every stream before releasing
// anything, so a copy still reading a pinned buffer never sees it freed, even after an error.
class Pipeline {
   public:
    Pipeline(const CudaRuntime& rt, size_t num_buffers, size_t buffer_bytes, size_t num_streams) : rt_(rt) {
        try {
            create(num_buffers, buffer_bytes, num_streams);
        } catch (...) {
            release();  // a throwing constructor runs no destructor
            throw;
        }
    }

    ~Pipeline() { release(); }
    Pipeline(const Pipeline&) = delete;
    Pipeline& operator=(const Pipeline&) = delete;

    uint8_t* buffer(size_t slot) const { return buffers_[slot]; }
    CudaRuntime::Event event(size_t slot) const { return events_[slot]; }
    CudaRuntime::Stream stream(size_t index) const { return streams_[index % streams_.size()]; }

    // Waits for every stream; reports the first error (an asynchronous copy failure lands here).
    void synchronize() const {
        for (CudaRuntime::Stream stream : streams_) rt_.check(rt_.stream_synchronize(stream), "cudaStreamSynchronize");
    }

   private:
    void create(size_t num_buffers, size_t buffer_bytes, size_t num_streams) {
        const CudaRuntime& rt = rt_;
        for (size_t i = 0; i < num_streams; ++i) {
            CudaRuntime::Stream stream = nullptr;
            rt.check(rt.stream_create_with_flags(&stream, kStreamNonBlocking), "cudaStreamCreateWithFlags");
            streams_.push_back(stream);
        }
        for (size_t i = 0; i < num_buffers; ++i) {
            CudaRuntime::Event event = nullptr;
            rt.check(rt.event_create_with_flags(&event, kEventDisableTiming), "cudaEventCreateWithFlags");
            events_.push_back(event);
            void* buffer = nullptr;
            rt.check(rt.host_alloc(&buffer, buffer_bytes, kHostAllocDefault),
                     "cudaHostAlloc of a " + std::to_string(buffer_bytes) + "-byte pinned buffer (buffer " +
                         std::to_string(i + 1) + " of " + std::to_string(num_buffers) + ")");
            buffers_.push_back(static_cast<uint8_t*>(buffer));
        }
    }

    void release() {
        for (CudaRuntime::Stream stream : streams_) rt_.stream_synchronize(stream);
        for (CudaRuntime::Event event : events_) rt_.event_destroy(event);
        for (uint8_t* buffer : buffers_) rt_.free_host(buffer);
        for (CudaRuntime::Stream stream : streams_) rt_.stream_destroy(stream);
        streams_.clear();
        events_.clear();
        buffers_.clear();
    }

    const CudaRuntime& rt_;
    std::vector<CudaRuntime::Stream> streams_;
    std::vector<CudaRuntime::Event> events_;
    std::vector<uint8_t*> buffers_;
};

// Hands each ring slot to batches i, i + N, i + 2N, ... in turn, and stops every waiter once a
// batch has failed (its error is kept, and rethrown in place of the waiters' cancellations).
class SlotTurns {
   public:
    explicit SlotTurns(size_t num_slots) : next_batch_(num_slots) {
        for (size_t slot = 0; slot < num_slots; ++slot) next_batch_[slot] = slot;
    }

    // Blocks until batch may use its slot; false when the run was cancelled meanwhile.
    bool wait_for_turn(size_t batch) {
        std::unique_lock<std::mutex> lock(mutex_);
        const size_t slot = batch % next_batch_.size();
        turn_.wait(lock, [&] { return error_ != nullptr || next_batch_[slot] == batch; });
        return error_ == nullptr;
    }

    void pass_turn(size_t batch) {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            next_batch_[batch % next_batch_.size()] = batch + next_batch_.size();
        }
        turn_.notify_all();
    }

    void fail(std::exception_ptr error) {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            if (error_ == nullptr) error_ = error;
        }
        turn_.notify_all();
    }

    std::exception_ptr error() {
        std::lock_guard<std::mutex> lock(mutex_);
        return error_;
    }

   private:
    std::mutex mutex_;
    std::condition_variable turn_;
    std::vector<size_t> next_batch_;
    std::exception_ptr error_;
};

class Cancelled : public std::exception {};

// resolve_plan, and the pipeline's own rule: raw copies only.
void resolve_raw(const std::vector<std::shared_ptr<MappedFile>>& files, const std::vector<Region>& regions,
                 std::vector<CopyOp>& ops) {
    resolve_plan(files, regions, ops);
    for (size_t i = 0; i < ops.size(); ++i) {
        if (ops[i].src_dtype != ops[i].dst_dtype || ops[i].rows > 0 || ops[i].swap > 0) {
            const std::string& path = files[ops[i].file]->path();
            throw CheckpointError(path + ": plan row " + std::to_string(i) + " (bytes at offset " +
                                      std::to_string(ops[i].src_offset) +
                                      "): the CUDA pipeline copies raw bytes; conversions and transposes run on "
                                      "the device after the copy, byte swaps on the host (python/warpload/engine/cuda.py)",
                                  path, ops[i].src_offset);
        }
    }
}

}  // namespace

void CudaRuntime::check(int code, const std::string& what) const {
    if (code == 0) return;
    const char* text = get_error_string != nullptr ? get_error_string(code) : nullptr;
    throw CudaError(what + " failed: " + (text != nullptr ? text : "unknown error") + " (CUDA error " +
                        std::to_string(code) + ", runtime " + path + ")",
                    code);
}

const CudaRuntime& load_cuda_runtime(const std::vector<std::string>& candidates) {
    static std::mutex guard;
    static std::map<std::string, std::unique_ptr<CudaRuntime>> loaded;
    std::lock_guard<std::mutex> lock(guard);
    std::string reasons;
    for (const std::string& path : candidates) {
        auto found = loaded.find(path);
        if (found != loaded.end()) return *found->second;
        void* handle = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
        if (handle == nullptr) {
            const char* error = ::dlerror();
            reasons += "\n  " + path + ": " + (error != nullptr ? error : "dlopen failed");
            continue;
        }
        auto runtime = std::make_unique<CudaRuntime>();
        runtime->path = path;
        std::string missing = resolve_all(handle, *runtime);
        if (!missing.empty()) {
            ::dlclose(handle);
            reasons += "\n  " + path + ": not a CUDA runtime (lacks " + missing + ")";
            continue;
        }
        return *(loaded[path] = std::move(runtime));
    }
    throw CudaUnavailableError(
        "no CUDA runtime could be loaded; tried:" + (reasons.empty() ? std::string(" nothing") : reasons) +
        "\nInstall a CUDA build of torch (it ships libcudart), or set WARPLOAD_CUDA_RUNTIME to the path of "
        "libcudart.so");
}

int cuda_device_count(const CudaRuntime& runtime) {
    int count = 0;
    int code = runtime.get_device_count(&count);
    if (code != 0 || count <= 0) {
        const char* text = code != 0 ? runtime.get_error_string(code) : "it reports 0 devices";
        throw CudaUnavailableError("the CUDA runtime " + runtime.path + " sees no GPU (" +
                                   (text != nullptr ? text : "unknown error") +
                                   "); load to device='cpu', or check the driver and CUDA_VISIBLE_DEVICES");
    }
    return count;
}

CudaStats execute_plan_cuda(const CudaRuntime& rt, const std::vector<std::shared_ptr<MappedFile>>& files,
                            const std::vector<Region>& regions, std::vector<CopyOp> ops, const CudaOptions& options) {
    resolve_raw(files, regions, ops);
    ops = coalesce(ops, regions, options.coalesce_gap);
    if (options.buffer_bytes == 0 || options.num_buffers == 0 || options.num_streams == 0) {
        throw std::invalid_argument("the CUDA pipeline needs at least one buffer of at least one byte and one stream");
    }
    const int devices = cuda_device_count(rt);
    if (options.device < 0 || options.device >= devices) {
        throw CudaUnavailableError("cuda:" + std::to_string(options.device) + " does not exist: the CUDA runtime sees " +
                                   std::to_string(devices) + " device(s)");
    }
    CudaStats stats;
    std::vector<Batch> batches = pack(ops, regions, options.buffer_bytes, options.coalesce_gap);
    if (batches.empty()) return stats;

    // Every byte passes through the ring: resident files are copied from the mapping, cold ones read with pread.
    std::vector<ReadMode> modes = read_modes(files, ops, options.method, options.warm_fraction, false);
    std::vector<FileSpan> spans = spans_of(files.size(), ops);
    for (size_t f = 0; f < files.size(); ++f) {
        if (!spans[f].empty()) ++(modes[f].bounce_via_pread ? stats.pread_files : stats.mmap_files);
    }

    const size_t num_buffers = std::min(options.num_buffers, batches.size());
    PoolLease pool(options.num_threads);
    DeviceGuard device(rt, options.device);
    Pipeline pipeline(rt, num_buffers, options.buffer_bytes, options.num_streams);
    stats.pinned_bytes = uint64_t(num_buffers) * options.buffer_bytes;
    SlotTurns turns(num_buffers);
    std::vector<int> worker_device(pool.workers(), -1);

    auto fill_and_send = [&](size_t index, size_t worker) {
        try {
            if (!turns.wait_for_turn(index)) throw Cancelled();
            const size_t slot = index % num_buffers;
            // The slot's previous batch is submitted; its copies must finish before the buffer is refilled.
            rt.check(rt.event_synchronize(pipeline.event(slot)), "cudaEventSynchronize");
            if (worker_device[worker] != options.device) {
                rt.check(rt.set_device(options.device), "cudaSetDevice(" + std::to_string(options.device) + ")");
                worker_device[worker] = options.device;
            }
            const Batch& batch = batches[index];
            uint8_t* buffer = pipeline.buffer(slot);
            for (const Read& read : batch.reads) {
                const MappedFile& file = *files[read.file];
                if (modes[read.file].bounce_via_pread) {
                    file.read_into(buffer + read.buffer_offset, read.src_offset, read.length);
                } else {
                    std::memcpy(buffer + read.buffer_offset, file.data() + read.src_offset, read.length);
                }
            }
            CudaRuntime::Stream stream = pipeline.stream(index);
            for (const Copy& copy : batch.copies) {
                // The message is built only on failure: thousands of tiny copies pay nothing for it.
                int code = rt.memcpy_async(copy.dst, buffer + copy.buffer_offset, copy.length, kMemcpyHostToDevice,
                                           stream);
                if (code != 0) {
                    rt.check(code, "cudaMemcpyAsync of " + std::to_string(copy.length) + " bytes to device address " +
                                       std::to_string(reinterpret_cast<uintptr_t>(copy.dst)));
                }
            }
            rt.check(rt.event_record(pipeline.event(slot), stream), "cudaEventRecord");
            for (const Read& read : batch.reads) report(options.progress, read.length);
            turns.pass_turn(index);
        } catch (const Cancelled&) {
            throw;
        } catch (...) {
            turns.fail(std::current_exception());
            throw;
        }
    };
    try {
        pool.run(batches.size(), fill_and_send);
    } catch (...) {
        // A waiter's Cancelled may reach the pool before the failure that caused it: report the cause.
        if (std::exception_ptr error = turns.error()) std::rethrow_exception(error);
        throw;
    }
    pipeline.synchronize();

    for (const Batch& batch : batches) {
        stats.batches += 1;
        stats.copies += batch.copies.size();
        stats.reads += batch.reads.size();
        for (const Copy& copy : batch.copies) stats.bytes += copy.length;
    }
    return stats;
}

}  // namespace warpload
