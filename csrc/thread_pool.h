// thread_pool.h — worker threads that run one batch of indexed tasks at a time, shared process-wide through PoolLease.
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

// The process-wide pool, held for one batch of work: the one way the core runs work in parallel.
// A thread that takes it while another thread holds it waits (plans run one at a time, each on
// every core). A task running on the pool that takes it again runs its work on its own thread, so
// nested use cannot deadlock. The pool is rebuilt with another size only between leases, so it
// outlives every lease that uses it.
class PoolLease {
   public:
    explicit PoolLease(size_t num_threads);  // 0: available_cores()
    PoolLease(const PoolLease&) = delete;
    PoolLease& operator=(const PoolLease&) = delete;

    // Workers the tasks run on: the `worker` argument of a task is below this (size scratch by it).
    size_t workers() const { return pool_ != nullptr ? pool_->size() : 1; }

    // ThreadPool::run on the pool, or every task in order on the calling thread when nested.
    void run(size_t num_tasks, const std::function<void(size_t task, size_t worker)>& task);

   private:
    std::unique_lock<std::mutex> lock_;
    ThreadPool* pool_ = nullptr;  // null when nested in a task of the pool
};

}  // namespace warpload
