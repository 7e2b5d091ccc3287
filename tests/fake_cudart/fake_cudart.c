/* fake_cudart.c — a CUDA runtime for tests, on host memory: "device" pointers are host buffers.
 *
 * Implements the functions warpload's csrc/cuda.cpp resolves, with the timing that hides bugs on
 * a real GPU made worse on purpose: each stream runs its work on its own thread, later (every
 * copy waits delay_us, jittered), so a pinned buffer refilled before its copy ran changes what
 * lands on the "device". Every copy also snapshots its source at enqueue time and compares at
 * execution, so an early refill is counted even when the bytes happen to match.
 *
 * Extra exports for tests: fake_cudart_configure, fake_cudart_reset, fake_cudart_stats.
 * Build: cc -O1 -shared -fPIC -pthread fake_cudart.c -o libcudart_fake.so
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef int cudaError_t;
enum {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInvalidDevice = 101,
    cudaErrorNotReady = 600,
};

/* Counters read by fake_cudart_stats, in this order. */
enum {
    STAT_MEMCPY_CALLS,
    STAT_BYTES_COPIED,
    STAT_HOST_ALLOCS_LIVE,
    STAT_HOST_ALLOC_CALLS,
    STAT_HOST_BYTES_PEAK,
    STAT_SOURCE_CHANGED_BEFORE_COPY, /* a pinned buffer was refilled while its copy was pending */
    STAT_FREED_WHILE_PENDING,        /* cudaFreeHost of a buffer a queued copy still reads */
    STAT_UNPINNED_SOURCE,            /* a copy from memory that cudaHostAlloc did not return */
    STAT_STREAMS_LIVE,
    STAT_EVENTS_LIVE,
    STAT_MAX_PENDING_COPIES,
    STAT_SET_DEVICE_CALLS,
    STAT_COUNT,
};

typedef struct Op Op;
struct Op {
    Op* next;
    void* dst;        /* copy: NULL for an event marker */
    const void* src;
    size_t nbytes;
    unsigned char* snapshot;
    struct Event* event;
    uint64_t sequence;
    cudaError_t error; /* injected asynchronous failure */
};

typedef struct Stream {
    pthread_t thread;
    Op* head;
    Op* tail;
    int busy;
    int stopping;
    cudaError_t sticky_error;
} Stream;

typedef struct Event {
    uint64_t recorded;
    uint64_t completed;
    struct Stream* stream;
} Event;

typedef struct Allocation {
    unsigned char* base;
    size_t nbytes;
} Allocation;

static pthread_mutex_t mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t changed = PTHREAD_COND_INITIALIZER;
static long long stats[STAT_COUNT];
static long long pending_copies;
static long long host_bytes_live;
static Allocation allocations[4096];
static int num_allocations;
static int current_device;  /* one per process, good enough for tests */
static unsigned delay_us = 200;
static long long fail_memcpy_at;  /* 1-based memcpy call that fails; 0: none */
static cudaError_t fail_code = cudaErrorInvalidValue;
static int fail_async;
static int fail_host_alloc_at; /* 1-based cudaHostAlloc call that fails; 0: none */

static int device_count(void) {
    const char* text = getenv("FAKE_CUDART_DEVICES");
    return text != NULL ? atoi(text) : 1;
}

void fake_cudart_configure(unsigned copy_delay_us, long long fail_at_memcpy, int code, int asynchronous,
                           int fail_at_host_alloc) {
    pthread_mutex_lock(&mutex);
    delay_us = copy_delay_us;
    fail_memcpy_at = fail_at_memcpy;
    fail_code = code;
    fail_async = asynchronous;
    fail_host_alloc_at = fail_at_host_alloc;
    pthread_mutex_unlock(&mutex);
}

/* Zeroes the call counters (not the live counts) and the failure injection. */
void fake_cudart_reset(void) {
    pthread_mutex_lock(&mutex);
    long long allocs = stats[STAT_HOST_ALLOCS_LIVE], streams = stats[STAT_STREAMS_LIVE];
    long long events = stats[STAT_EVENTS_LIVE];
    memset(stats, 0, sizeof(stats));
    stats[STAT_HOST_ALLOCS_LIVE] = allocs;
    stats[STAT_STREAMS_LIVE] = streams;
    stats[STAT_EVENTS_LIVE] = events;
    fail_memcpy_at = 0;
    fail_async = 0;
    fail_host_alloc_at = 0;
    pthread_mutex_unlock(&mutex);
}

int fake_cudart_stats(long long* out, int n) {
    pthread_mutex_lock(&mutex);
    for (int i = 0; i < n && i < STAT_COUNT; ++i) out[i] = stats[i];
    pthread_mutex_unlock(&mutex);
    return STAT_COUNT;
}

static int is_pinned(const void* ptr, size_t nbytes) {
    const unsigned char* p = (const unsigned char*)ptr;
    for (int i = 0; i < num_allocations; ++i) {
        if (p >= allocations[i].base && p + nbytes <= allocations[i].base + allocations[i].nbytes) return 1;
    }
    return 0;
}

static void sleep_us(unsigned us) {
    struct timespec ts = {us / 1000000, (long)(us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

static void* stream_main(void* arg) {
    Stream* stream = (Stream*)arg;
    unsigned seed = (unsigned)(uintptr_t)stream;
    pthread_mutex_lock(&mutex);
    for (;;) {
        while (stream->head == NULL && !stream->stopping) pthread_cond_wait(&changed, &mutex);
        if (stream->head == NULL) break;
        Op* op = stream->head;
        stream->busy = 1;
        unsigned delay = delay_us;
        pthread_mutex_unlock(&mutex);
        if (op->dst != NULL && delay > 0) sleep_us(delay / 2 + (unsigned)rand_r(&seed) % (delay + 1));
        int changed_source = 0;
        if (op->dst != NULL && op->error == cudaSuccess) {
            changed_source = memcmp(op->src, op->snapshot, op->nbytes) != 0;
            memcpy(op->dst, op->src, op->nbytes);
        }
        pthread_mutex_lock(&mutex);
        if (op->error != cudaSuccess && stream->sticky_error == cudaSuccess) stream->sticky_error = op->error;
        if (op->dst != NULL) {
            stats[STAT_SOURCE_CHANGED_BEFORE_COPY] += changed_source;
            pending_copies -= 1;
        } else if (op->event->completed < op->sequence) {
            op->event->completed = op->sequence;
        }
        stream->head = op->next;
        if (stream->head == NULL) stream->tail = NULL;
        stream->busy = 0;
        free(op->snapshot);
        free(op);
        pthread_cond_broadcast(&changed);
    }
    pthread_mutex_unlock(&mutex);
    return NULL;
}

static void enqueue(Stream* stream, Op* op) {
    if (stream->tail != NULL) {
        stream->tail->next = op;
    } else {
        stream->head = op;
    }
    stream->tail = op;
    pthread_cond_broadcast(&changed);
}

static int stream_idle(const Stream* stream) { return stream->head == NULL && !stream->busy; }

/* ---- the runtime API ---- */

const char* cudaGetErrorString(cudaError_t error) {
    static __thread char text[64];
    snprintf(text, sizeof(text), "fake CUDA error %d", error);
    return error == cudaSuccess ? "no error" : text;
}

cudaError_t cudaGetDeviceCount(int* count) {
    *count = device_count();
    return cudaSuccess;
}

cudaError_t cudaGetDevice(int* device) {
    pthread_mutex_lock(&mutex);
    *device = current_device;
    pthread_mutex_unlock(&mutex);
    return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) {
    if (device < 0 || device >= device_count()) return cudaErrorInvalidDevice;
    pthread_mutex_lock(&mutex);
    current_device = device;
    stats[STAT_SET_DEVICE_CALLS] += 1;
    pthread_mutex_unlock(&mutex);
    return cudaSuccess;
}

cudaError_t cudaHostAlloc(void** ptr, size_t nbytes, unsigned int flags) {
    (void)flags;
    pthread_mutex_lock(&mutex);
    stats[STAT_HOST_ALLOC_CALLS] += 1;
    if ((fail_host_alloc_at > 0 && stats[STAT_HOST_ALLOC_CALLS] == fail_host_alloc_at) ||
        num_allocations == (int)(sizeof(allocations) / sizeof(allocations[0]))) {
        pthread_mutex_unlock(&mutex);
        return cudaErrorMemoryAllocation;
    }
    void* memory = NULL;
    if (posix_memalign(&memory, 4096, nbytes > 0 ? nbytes : 1) != 0) {
        pthread_mutex_unlock(&mutex);
        return cudaErrorMemoryAllocation;
    }
    /* Garbage, not zeros: a read that leaves bytes unwritten must not pass by luck. */
    memset(memory, 0xA5, nbytes);
    allocations[num_allocations++] = (Allocation){(unsigned char*)memory, nbytes};
    stats[STAT_HOST_ALLOCS_LIVE] += 1;
    host_bytes_live += (long long)nbytes;
    if (host_bytes_live > stats[STAT_HOST_BYTES_PEAK]) stats[STAT_HOST_BYTES_PEAK] = host_bytes_live;
    *ptr = memory;
    pthread_mutex_unlock(&mutex);
    return cudaSuccess;
}

static Stream* streams_live[1024];
static int num_streams_live;

static int copy_pending_from(const unsigned char* base, size_t nbytes) {
    for (int s = 0; s < num_streams_live; ++s) {
        for (Op* op = streams_live[s]->head; op != NULL; op = op->next) {
            const unsigned char* src = (const unsigned char*)op->src;
            if (op->dst != NULL && src < base + nbytes && src + op->nbytes > base) return 1;
        }
    }
    return 0;
}

cudaError_t cudaFreeHost(void* ptr) {
    pthread_mutex_lock(&mutex);
    for (int i = 0; i < num_allocations; ++i) {
        if (allocations[i].base != ptr) continue;
        if (copy_pending_from(allocations[i].base, allocations[i].nbytes)) {
            stats[STAT_FREED_WHILE_PENDING] += 1;
            /* Wait, so the test reports the bug instead of crashing on freed memory. */
            while (copy_pending_from(allocations[i].base, allocations[i].nbytes)) pthread_cond_wait(&changed, &mutex);
        }
        host_bytes_live -= (long long)allocations[i].nbytes;
        allocations[i] = allocations[--num_allocations];
        stats[STAT_HOST_ALLOCS_LIVE] -= 1;
        pthread_mutex_unlock(&mutex);
        free(ptr);
        return cudaSuccess;
    }
    pthread_mutex_unlock(&mutex);
    return cudaErrorInvalidValue;
}

cudaError_t cudaStreamCreateWithFlags(void** out, unsigned int flags) {
    (void)flags;
    Stream* stream = (Stream*)calloc(1, sizeof(Stream));
    if (stream == NULL) return cudaErrorMemoryAllocation;
    pthread_mutex_lock(&mutex);
    if (num_streams_live == (int)(sizeof(streams_live) / sizeof(streams_live[0]))) {
        pthread_mutex_unlock(&mutex);
        free(stream);
        return cudaErrorMemoryAllocation;
    }
    streams_live[num_streams_live++] = stream;
    stats[STAT_STREAMS_LIVE] += 1;
    pthread_mutex_unlock(&mutex);
    pthread_create(&stream->thread, NULL, stream_main, stream);
    *out = stream;
    return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(void* handle) {
    Stream* stream = (Stream*)handle;
    pthread_mutex_lock(&mutex);
    while (!stream_idle(stream)) pthread_cond_wait(&changed, &mutex);
    cudaError_t error = stream->sticky_error;
    pthread_mutex_unlock(&mutex);
    return error;
}

cudaError_t cudaStreamDestroy(void* handle) {
    Stream* stream = (Stream*)handle;
    pthread_mutex_lock(&mutex);
    stream->stopping = 1;
    pthread_cond_broadcast(&changed);
    for (int s = 0; s < num_streams_live; ++s) {
        if (streams_live[s] == stream) {
            streams_live[s] = streams_live[--num_streams_live];
            break;
        }
    }
    stats[STAT_STREAMS_LIVE] -= 1;
    pthread_mutex_unlock(&mutex);
    pthread_join(stream->thread, NULL); /* drains what is queued first, as CUDA completes it */
    free(stream);
    return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t nbytes, int kind, void* handle) {
    (void)kind;
    Stream* stream = (Stream*)handle;
    pthread_mutex_lock(&mutex);
    stats[STAT_MEMCPY_CALLS] += 1;
    cudaError_t injected = fail_memcpy_at > 0 && stats[STAT_MEMCPY_CALLS] == fail_memcpy_at ? fail_code : cudaSuccess;
    if (injected != cudaSuccess && !fail_async) {
        pthread_mutex_unlock(&mutex);
        return injected;
    }
    if (dst == NULL || src == NULL || stream == NULL) {
        pthread_mutex_unlock(&mutex);
        return cudaErrorInvalidValue;
    }
    if (!is_pinned(src, nbytes)) stats[STAT_UNPINNED_SOURCE] += 1;
    stats[STAT_BYTES_COPIED] += (long long)nbytes;
    pending_copies += 1;
    if (pending_copies > stats[STAT_MAX_PENDING_COPIES]) stats[STAT_MAX_PENDING_COPIES] = pending_copies;
    pthread_mutex_unlock(&mutex);
    Op* op = (Op*)calloc(1, sizeof(Op));
    op->dst = dst;
    op->src = src;
    op->nbytes = nbytes;
    op->error = injected;
    op->snapshot = (unsigned char*)malloc(nbytes > 0 ? nbytes : 1);
    memcpy(op->snapshot, src, nbytes);
    pthread_mutex_lock(&mutex);
    enqueue(stream, op);
    pthread_mutex_unlock(&mutex);
    return cudaSuccess;
}

cudaError_t cudaEventCreateWithFlags(void** out, unsigned int flags) {
    (void)flags;
    Event* event = (Event*)calloc(1, sizeof(Event));
    if (event == NULL) return cudaErrorMemoryAllocation;
    pthread_mutex_lock(&mutex);
    stats[STAT_EVENTS_LIVE] += 1;
    pthread_mutex_unlock(&mutex);
    *out = event;
    return cudaSuccess;
}

cudaError_t cudaEventRecord(void* handle, void* stream_handle) {
    Event* event = (Event*)handle;
    Stream* stream = (Stream*)stream_handle;
    Op* op = (Op*)calloc(1, sizeof(Op));
    pthread_mutex_lock(&mutex);
    op->event = event;
    op->sequence = ++event->recorded;
    event->stream = stream;
    enqueue(stream, op);
    pthread_mutex_unlock(&mutex);
    return cudaSuccess;
}

cudaError_t cudaEventSynchronize(void* handle) {
    Event* event = (Event*)handle;
    pthread_mutex_lock(&mutex);
    uint64_t target = event->recorded;
    while (event->completed < target) pthread_cond_wait(&changed, &mutex);
    cudaError_t error = event->stream != NULL ? event->stream->sticky_error : cudaSuccess;
    pthread_mutex_unlock(&mutex);
    return error;
}

cudaError_t cudaEventDestroy(void* handle) {
    Event* event = (Event*)handle;
    pthread_mutex_lock(&mutex);
    while (event->completed < event->recorded) pthread_cond_wait(&changed, &mutex);
    stats[STAT_EVENTS_LIVE] -= 1;
    pthread_mutex_unlock(&mutex);
    free(event);
    return cudaSuccess;
}
