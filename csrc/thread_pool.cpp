// thread_pool.cpp — worker threads, batch dispatch by atomic counter, first-error cancellation.
#include "thread_pool.h"

#include <sched.h>

#include <memory>

namespace warpload {

namespace {

// Set on the pool's worker threads: a lease taken there runs inline instead of waiting for itself.
thread_local bool inside_pool_task = false;

}  // namespace

ThreadPool::ThreadPool(size_t num_threads) {
    if (num_threads == 0) num_threads = 1;
    workers_.reserve(num_threads);
    for (size_t i = 0; i < num_threads; ++i) workers_.emplace_back([this, i] { work(i); });
}

ThreadPool::~ThreadPool() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        stopping_ = true;
    }
    wake_.notify_all();
    for (auto& worker : workers_) worker.join();
}

void ThreadPool::run(size_t num_tasks, const std::function<void(size_t, size_t)>& task) {
    if (num_tasks == 0) return;
    std::unique_lock<std::mutex> lock(mutex_);
    task_ = &task;
    num_tasks_ = num_tasks;
    next_.store(0);
    cancelled_.store(false);
    error_ = nullptr;
    busy_ = workers_.size();
    ++generation_;
    wake_.notify_all();
    done_.wait(lock, [this] { return busy_ == 0; });
    task_ = nullptr;
    if (error_) std::rethrow_exception(error_);
}

void ThreadPool::work(size_t worker) {
    inside_pool_task = true;
    uint64_t seen = 0;
    for (;;) {
        const std::function<void(size_t, size_t)>* task;
        size_t num_tasks;
        {
            std::unique_lock<std::mutex> lock(mutex_);
            wake_.wait(lock, [&] { return stopping_ || generation_ != seen; });
            if (stopping_) return;
            seen = generation_;
            task = task_;
            num_tasks = num_tasks_;
        }
        for (;;) {
            if (cancelled_.load(std::memory_order_relaxed)) break;
            size_t i = next_.fetch_add(1, std::memory_order_relaxed);
            if (i >= num_tasks) break;
            try {
                (*task)(i, worker);
            } catch (...) {
                std::lock_guard<std::mutex> lock(mutex_);
                if (!error_) error_ = std::current_exception();
                cancelled_.store(true);
            }
        }
        std::lock_guard<std::mutex> lock(mutex_);
        if (--busy_ == 0) done_.notify_one();
    }
}

size_t available_cores() {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0) {
        int count = CPU_COUNT(&set);
        if (count > 0) return static_cast<size_t>(count);
    }
    unsigned hw = std::thread::hardware_concurrency();
    return hw > 0 ? hw : 1;
}

PoolLease::PoolLease(size_t num_threads) {
    if (inside_pool_task) return;
    static std::mutex mutex;
    static std::unique_ptr<ThreadPool> pool;
    lock_ = std::unique_lock<std::mutex>(mutex);
    if (num_threads == 0) num_threads = available_cores();
    if (!pool || pool->size() != num_threads) {
        pool.reset();  // joins the old workers before the new ones start
        pool = std::make_unique<ThreadPool>(num_threads);
    }
    pool_ = pool.get();
}

void PoolLease::run(size_t num_tasks, const std::function<void(size_t, size_t)>& task) {
    if (pool_ != nullptr) return pool_->run(num_tasks, task);
    for (size_t i = 0; i < num_tasks; ++i) task(i, 0);
}

}  // namespace warpload
