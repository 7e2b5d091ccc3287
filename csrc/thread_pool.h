// thread_pool.h — a fixed set of worker threads that run one batch of indexed tasks at a time.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace warpload {

class ThreadPool {
   public:
    explicit ThreadPool(size_t num_threads);
    ~ThreadPool();
    ThreadPool(const ThreadPool&) = delete;
    ThreadPool& operator=(const ThreadPool&) = delete;

    size_t size() const { return workers_.size(); }

    // Runs task(i, worker) for every i in [0, num_tasks), handing out indices in increasing order
    // so that neighbouring file ranges are read at about the same time. Blocks until all are done.
    // The first exception thrown by a task cancels the tasks not yet started and is rethrown here.
    void run(size_t num_tasks, const std::function<void(size_t task, size_t worker)>& task);

   private:
    void work(size_t worker);

    std::vector<std::thread> workers_;
    std::mutex mutex_;
    std::condition_variable wake_;
    std::condition_variable done_;
    const std::function<void(size_t, size_t)>* task_ = nullptr;
    size_t num_tasks_ = 0;
    std::atomic<size_t> next_{0};
    std::atomic<bool> cancelled_{false};
    size_t busy_ = 0;
    uint64_t generation_ = 0;
    bool stopping_ = false;
    std::exception_ptr error_;
};

// Cores this process may run on (sched_getaffinity), at least 1.
size_t available_cores();

// The process-wide pool, (re)built with num_threads workers (0: available_cores()).
ThreadPool& shared_pool(size_t num_threads);

// Held for the whole of a plan's run: plans use the shared pool one at a time.
std::mutex& shared_pool_mutex();

}  // namespace warpload
