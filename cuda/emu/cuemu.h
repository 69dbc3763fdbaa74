// cuemu.h: the CUDA execution model on CPU threads, so the kernel sources in cuda/*.cu run unchanged under g++.
//
// Blocks of a launch run one after another. The threads of a block are OS threads (a pool that persists across
// launches), so __syncthreads is a real barrier and ThreadSanitizer can see a missing one. Warp shuffles go through
// a per-thread 64-bit exchange slot and a per-warp barrier (write, wait, read, wait). Atomics use std::atomic_ref.
// __shared__ is `static`: launches are serialised by the launcher, never concurrent.
// A thread that returns early leaves its block's and warp's barriers, so early exit never deadlocks.
#pragma once

#include <algorithm>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __restrict__ __restrict
#define __launch_bounds__(...)
#define __shared__ static
#define __constant__ static

struct dim3
{
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

struct alignas(8) float2 { float x, y; };
struct alignas(16) float4 { float x, y, z, w; };

inline thread_local dim3 threadIdx, blockIdx, blockDim, gridDim;

namespace cuemu
{
// A reusable barrier whose party count shrinks when a thread leaves (returns from the kernel early).
class Barrier
{
    std::mutex mutex_;
    int expected_ = 0, arrived_ = 0;
    std::atomic<unsigned> generation_{0};

    void release_locked()
    {
        arrived_ = 0;
        generation_.fetch_add(1, std::memory_order_release);
        generation_.notify_all();
    }

public:
    void reset(int parties)
    {
        std::lock_guard lock(mutex_);
        expected_ = parties;
        arrived_ = 0;
    }

    // The last thread to arrive runs on_complete (under the barrier's lock) before releasing the others.
    template <class F = void (*)()>
    void arrive_and_wait(F on_complete = [] {})
    {
        unsigned generation;
        {
            std::lock_guard lock(mutex_);
            generation = generation_.load(std::memory_order_relaxed);
            if (++arrived_ == expected_)
            {
                on_complete();
                release_locked();
                return;
            }
        }
        while (generation_.load(std::memory_order_acquire) == generation) generation_.wait(generation);
    }

    void leave()
    {
        std::lock_guard lock(mutex_);
        --expected_;
        if (arrived_ > 0 && arrived_ == expected_) release_locked();
    }
};

// Per-thread identity inside the current block.
inline thread_local int thread_rank = 0;

struct BlockState
{
    Barrier block;                 // __syncthreads
    std::vector<Barrier> warps;    // __syncwarp and the shuffles
    std::vector<uint64_t> slots;   // one shuffle exchange slot per thread
    int threads = 0;

    int warp_size(int warp) const { return std::min(32, threads - warp * 32); }

    void reset(int thread_count)
    {
        threads = thread_count;
        int warp_count = (thread_count + 31) / 32;
        if ((int)warps.size() < warp_count) warps = std::vector<Barrier>(warp_count);
        slots.resize(thread_count);
        block.reset(thread_count);
        for (int w = 0; w < warp_count; w++) warps[w].reset(warp_size(w));
    }
};

inline BlockState& block_state()
{
    static BlockState state;
    return state;
}

inline void leave_block()
{
    auto& state = block_state();
    state.block.leave();
    state.warps[thread_rank / 32].leave();
}

template <class T>
T exchange(T value, int source_lane)
{
    static_assert(sizeof(T) <= 8, "cuemu shuffles carry at most 8 bytes");
    auto& state = block_state();
    int warp = thread_rank / 32;
    uint64_t bits = 0;
    std::memcpy(&bits, &value, sizeof(T));
    state.slots[thread_rank] = bits;
    state.warps[warp].arrive_and_wait();
    int source = warp * 32 + source_lane;
    T result = value;
    if (source_lane >= 0 && source_lane < state.warp_size(warp)) std::memcpy(&result, &state.slots[source], sizeof(T));
    state.warps[warp].arrive_and_wait();
    return result;
}

inline int lane() { return thread_rank % 32; }
} // namespace cuemu

inline void __syncthreads() { cuemu::block_state().block.arrive_and_wait(); }
inline void __syncwarp(unsigned = 0xffffffffu) { cuemu::block_state().warps[cuemu::thread_rank / 32].arrive_and_wait(); }

// Shuffles within segments of `width` lanes, as on the GPU; the mask is ignored (every live lane must take part).
template <class T> T __shfl_sync(unsigned, T v, int src, int width = 32)
{
    int base = cuemu::lane() & ~(width - 1);
    return cuemu::exchange(v, base + (src & (width - 1)));
}
template <class T> T __shfl_xor_sync(unsigned, T v, int mask, int width = 32)
{
    int lane = cuemu::lane(), target = lane ^ mask;
    return cuemu::exchange(v, (target & ~(width - 1)) == (lane & ~(width - 1)) ? target : lane);
}
template <class T> T __shfl_down_sync(unsigned, T v, unsigned delta, int width = 32)
{
    int lane = cuemu::lane(), target = lane + (int)delta;
    return cuemu::exchange(v, (target & ~(width - 1)) == (lane & ~(width - 1)) ? target : lane);
}
template <class T> T __shfl_up_sync(unsigned, T v, unsigned delta, int width = 32)
{
    int lane = cuemu::lane(), target = lane - (int)delta;
    return cuemu::exchange(v, target >= (lane & ~(width - 1)) ? target : lane);
}

template <class T> T atomicAdd(T* address, T value) { return std::atomic_ref<T>(*address).fetch_add(value); }
template <class T> T atomicExch(T* address, T value) { return std::atomic_ref<T>(*address).exchange(value); }
template <class T> T atomicMax(T* address, T value)
{
    std::atomic_ref<T> ref(*address);
    T old = ref.load();
    while (old < value && !ref.compare_exchange_weak(old, value)) {}
    return old;
}
template <class T> T atomicCAS(T* address, T compare, T value)
{
    std::atomic_ref<T>(*address).compare_exchange_strong(compare, value);
    return compare;
}

using std::isfinite;
using std::max;
using std::min;
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __int_as_float(int bits) { return std::bit_cast<float>(bits); }
inline int __float_as_int(float x) { return std::bit_cast<int>(x); }
template <class T> T __ldg(const T* p) { return *p; }

namespace cuemu
{
// The worker pool: thread i of every launch is always the same OS thread, created once.
class Pool
{
    std::vector<std::thread> workers_;
    std::atomic<unsigned> generation_{0};
    std::atomic<int> finished_{0};
    std::mutex launch_mutex_, setup_mutex_;
    Barrier end_of_block_;
    dim3 grid_, block_;
    int threads_ = 0;
    void (*body_)(void*) = nullptr;
    void* context_ = nullptr;

    void run_worker(int rank)
    {
        unsigned seen = 0;
        for (;;)
        {
            while (generation_.load(std::memory_order_acquire) == seen) generation_.wait(seen);
            bool takes_part;
            {
                std::lock_guard lock(setup_mutex_); // generation and thread count are read as one
                seen = generation_.load(std::memory_order_acquire);
                takes_part = rank < threads_;
            }
            if (takes_part) run_blocks(rank);
        }
    }

    void run_blocks(int rank)
    {
        thread_rank = rank;
        blockDim = block_;
        gridDim = grid_;
        threadIdx = dim3(rank % block_.x, rank / block_.x % block_.y, rank / (block_.x * block_.y));
        for (unsigned z = 0; z < grid_.z; z++)
            for (unsigned y = 0; y < grid_.y; y++)
                for (unsigned x = 0; x < grid_.x; x++)
                {
                    blockIdx = dim3(x, y, z);
                    body_(context_);
                    leave_block();
                    end_of_block_.arrive_and_wait([this] { block_state().reset(threads_); });
                }
        if (finished_.fetch_add(1, std::memory_order_acq_rel) + 1 == threads_) finished_.notify_all();
    }

public:
    // Runs body(context) for every thread of every block; returns when all are done.
    void launch(dim3 grid, dim3 block, void (*body)(void*), void* context)
    {
        std::lock_guard lock(launch_mutex_);
        int threads = (int)(block.x * block.y * block.z);
        while ((int)workers_.size() < threads)
        {
            int rank = (int)workers_.size();
            workers_.emplace_back([this, rank] { run_worker(rank); });
            workers_.back().detach();
        }
        {
            std::lock_guard setup(setup_mutex_);
            threads_ = threads;
            grid_ = grid;
            block_ = block;
            body_ = body;
            context_ = context;
            block_state().reset(threads_);
            end_of_block_.reset(threads_);
            finished_.store(0);
            generation_.fetch_add(1, std::memory_order_release);
        }
        generation_.notify_all();
        for (int done = finished_.load(); done < threads_; done = finished_.load()) finished_.wait(done);
    }
};

inline Pool& pool()
{
    static Pool* instance = new Pool(); // never destroyed: detached workers outlive static destruction
    return *instance;
}
} // namespace cuemu
