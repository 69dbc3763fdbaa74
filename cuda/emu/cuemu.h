// cuemu.h: the CUDA execution model on CPU threads, so the kernel sources in cuda/*.cu run unchanged under g++.
//
// A launch's blocks are shared out to a few workers (the launching thread plus pool threads; as many as the host sets
// with cuemu_set_workers, the engine's CPU thread count), each running whole blocks. Inside a worker the threads of a block are fibers: each has its own stack and runs until it
// reaches a barrier (__syncthreads, __syncwarp, a shuffle) or returns, then the next runnable one resumes. A switch
// costs a few nanoseconds, where a block of OS threads paid a kernel context switch per barrier. threadIdx and the other
// built-ins sit at the top of each fiber's stack, found from the stack pointer.
// __shared__ is `static thread_local`: one copy per worker, and a worker runs one block at a time; it is filled with
// NaN bytes before each block, as a GPU's shared memory holds whatever an earlier block left.
// Warp shuffles go through per-thread 64-bit exchange slots and the warp's barrier (write, wait, read): two slots per
// thread, used in turn, so a lane that runs ahead to the next shuffle never overwrites a value still to be read.
// Warp-wide helpers that would shuffle many times in a row (warp_sum, warp_max, mma_16x8x16 in common.cuh) gather the
// warp's values with one barrier instead (warp_all_gather) and compute the lanes' results, bit for bit the shuffles',
// once for the warp (warp_once).
// A value shuffled from a lane that did not take part (it returned first, or the warp is partial and has no such lane)
// is undefined on a GPU; here it reads as all-ones bits (NaN as a float), so a result built on it shows.
// A thread that returns early leaves its block's and warp's barriers, so early exit never deadlocks; barriers that
// not every live thread reaches are reported as a failed launch instead of hanging, and so is a wide access (a float4,
// 8 or 4 bytes at once) at an address not aligned to its size, which a GPU faults on (common.cuh's as_vector).
// Blocks never run concurrently with themselves, and kernels here use no cross-block atomics, so results do not
// depend on how blocks are shared out.
// A launch runs in one of two orders: ascending (between two barriers a scope's threads run one after another from
// the lowest rank up, and blocks are handed out from the first) or descending (from the highest rank down, blocks
// from the last). The thread that releases a barrier hands over to the first of its scope, so the order holds in
// every phase. A thread runs until its next barrier, so in one order every thread of a phase runs before each
// higher-ranked one, and in the other after it: a data race between two threads (a read of a value the other writes
// between the same two barriers, or a write over one the other still has to read) gives wrong results in at least
// one of the two orders, where a GPU would give them now and then.
#pragma once

#include <algorithm>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>
#include <dlfcn.h>
#include <link.h>
#include <sys/mman.h>
#include <unistd.h>
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#endif

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __restrict__ __restrict
#define __launch_bounds__(...)
#define __shared__ static thread_local
#define __constant__ static

struct dim3
{
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

struct alignas(8) float2 { float x, y; };
struct alignas(16) float4 { float x, y, z, w; };

namespace cuemu
{
class Worker;

// What a running thread knows of itself, kept at the top of its fiber's stack. Stacks are aligned to their size, so a
// kernel finds it from the stack pointer (a mask and a load) instead of a thread_local, which in a shared library
// costs a call to __tls_get_addr per read.
struct Self
{
    dim3 thread, block, block_shape, grid; // threadIdx, blockIdx, blockDim, gridDim
    int rank;                              // the linear thread index within the block
    Worker* worker;
};

inline constexpr size_t StackBytes = 128 * 1024;

// Valid only on a fiber's stack, which is where kernel code runs.
__attribute__((always_inline)) inline Self& self()
{
    uintptr_t sp;
#if defined(__x86_64__)
    asm("movq %%rsp, %0" : "=r"(sp)); // not volatile: one function's frames never move to another stack
#elif defined(__aarch64__)
    asm("mov %0, sp" : "=r"(sp));
#else
    sp = reinterpret_cast<uintptr_t>(__builtin_frame_address(0));
#endif
    return *reinterpret_cast<Self*>((sp & ~(StackBytes - 1)) + StackBytes - sizeof(Self));
}
} // namespace cuemu

#define threadIdx (cuemu::self().thread)
#define blockIdx (cuemu::self().block)
#define blockDim (cuemu::self().block_shape)
#define gridDim (cuemu::self().grid)

namespace cuemu
{
// ---- Execution contexts: a saved stack pointer (x86-64: the callee-saved registers are pushed on the stack being
// left; every fiber of a worker shares its MXCSR and x87 control word, which no kernel changes), or ucontext
// elsewhere.
#if defined(__x86_64__)
extern "C" void cuemu_switch_stack(void** save_sp, void* load_sp);
asm(R"(
    .text
    .p2align 4
    .hidden cuemu_switch_stack
    .globl cuemu_switch_stack
    .type cuemu_switch_stack, @function
cuemu_switch_stack:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size cuemu_switch_stack, .-cuemu_switch_stack
)");

struct Context
{
    void* sp = nullptr;

    // Prepares a context that starts entry() on the stack [base, base + size).
    void make(char* base, size_t size, void (*entry)())
    {
        auto* top = reinterpret_cast<uint64_t*>(reinterpret_cast<uintptr_t>(base + size) & ~uintptr_t(15));
        *--top = 0;                                  // entry's return address: it never returns
        *--top = reinterpret_cast<uint64_t>(entry); // popped by the switch's ret
        top -= 6;                                    // rbp rbx r12..r15
        std::memset(top, 0, 6 * sizeof(uint64_t));
        sp = top;
    }

    static void swap(Context& from, Context& to) { cuemu_switch_stack(&from.sp, to.sp); }

    // The lowest address of the stack the fiber used when it last left it (nullptr: never run).
    char* left_at() const { return static_cast<char*>(sp); }
};
#else
} // namespace cuemu
#include <ucontext.h>
namespace cuemu
{
struct Context
{
    ucontext_t uc{};

    void make(char* base, size_t size, void (*entry)())
    {
        getcontext(&uc);
        uc.uc_stack.ss_sp = base;
        uc.uc_stack.ss_size = size;
        uc.uc_link = nullptr;
        makecontext(&uc, entry, 0);
    }

    static void swap(Context& from, Context& to) { swapcontext(&from.uc, &to.uc); }

    // Where the fiber left its stack is not kept here: the whole stack may have been used.
    char* left_at() const { return static_cast<char*>(uc.uc_stack.ss_sp); }
};
#endif

// A barrier among the fibers of one block; its party count shrinks when a thread returns.
struct Barrier
{
    int expected = 0, arrived = 0;
    unsigned generation = 0;

    void reset(int parties) { expected = parties, arrived = 0; }
    void release() { arrived = 0, generation++; }
    bool arrive() { return ++arrived == expected ? (release(), true) : false; } // true: this arrival released it
    void leave()
    {
        --expected;
        if (arrived > 0 && arrived == expected) release();
    }
};

struct Fiber
{
    Context context;
    Self* self; // at the top of its stack
    const Barrier* waiting = nullptr; // blocked until this barrier's generation passes `generation`
    unsigned generation = 0;
    unsigned exchanges = 0; // warp exchanges (shuffles, all-gathers) this thread has made: their parity picks the area
    bool done = true;

    bool runnable() const { return !done && (waiting == nullptr || waiting->generation != generation); }
};

// One worker runs whole blocks, one at a time, as fibers on the OS thread that drives it.
class Worker
{
    static constexpr size_t MaxThreads = 1024;

    std::vector<Fiber> fibers_;
    char* stacks_ = nullptr;
    Context home_; // the block loop's own context
    int current_ = 0, live_ = 0;
    int returned_ = 0; // how many threads at the start of the launch's order have all returned: schedule skips them
    int step_ = 1; // +1: fibers resume in ascending rank order; -1: descending
    void (*body_)(void*) = nullptr;
    void* argument_ = nullptr;

    [[noreturn]] static void fiber_main();
    void switch_to(int next);
    int after(int rank) const { return rank + step_ == threads ? 0 : rank + step_ < 0 ? threads - 1 : rank + step_; }
    int place(int rank) const { return step_ > 0 ? rank : threads - 1 - rank; } // a rank's place in the launch's order
    int rank_at(int place) const { return step_ > 0 ? place : threads - 1 - place; }
    void schedule(int from);

public:
    Barrier block;               // __syncthreads
    std::vector<Barrier> warps;  // __syncwarp and the shuffles
    std::vector<uint64_t> slots; // two shuffle exchange slots per thread: [parity][thread]
    static constexpr int GatherWords = 5;
    std::vector<uint64_t> gathers; // two all-gather areas of GatherWords per thread: [parity][thread]
    // A result that one lane computes for its whole warp and every lane reads (warp_once), with the generation of the
    // warp's barrier it follows.
    struct WarpResult { unsigned generation = 0; alignas(16) unsigned char bytes[512]; };
    std::vector<WarpResult> warp_results; // [warp]
    int threads = 0;
    bool deadlocked = false;
    const void* misaligned = nullptr; // the first misaligned wide access of this worker's blocks in the launch
    size_t misaligned_bytes = 0;

    Worker()
    {
        // Stacks are reserved, not committed: a fiber touches a few pages at its top. The lowest page of each is a
        // guard, so an overflow faults instead of corrupting the neighbour.
        // One stack more than needed, so that they can start at a multiple of their size (self() relies on it).
        void* memory = mmap(nullptr, StackBytes * (MaxThreads + 1), PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
        if (memory == MAP_FAILED) std::abort();
        stacks_ = reinterpret_cast<char*>((reinterpret_cast<uintptr_t>(memory) + StackBytes - 1) & ~(StackBytes - 1));
        long page = sysconf(_SC_PAGESIZE);
        fibers_.resize(MaxThreads);
        for (size_t i = 0; i < MaxThreads; i++)
        {
            mprotect(stacks_ + i * StackBytes, page, PROT_NONE);
            fibers_[i].self = reinterpret_cast<Self*>(stacks_ + (i + 1) * StackBytes - sizeof(Self));
        }
    }

    int rank() const { return current_; }

    // The number of the running thread's next warp exchange (a shuffle or an all-gather), counted from 0 per thread:
    // its parity picks one of two areas in turn, so a lane that runs ahead to the next exchange never overwrites
    // values still to be read.
    unsigned next_exchange() { return fibers_[current_].exchanges++; }

    // Whether thread `rank` took part in exchange number `round` (checked after its barrier, which waits for every
    // live lane): a live lane did; one that returned did only if it got that far.
    bool took_part(int rank, unsigned round) const
    {
        if (rank >= threads) return false;
        if (warps[rank / 32].expected == warp_size(rank / 32)) return true; // no lane of its warp has returned
        return !fibers_[rank].done || fibers_[rank].exchanges > round;
    }
    int warp_size(int warp) const { return std::min(32, threads - warp * 32); }

    // Runs body(argument) on every thread of block `index` of `grid`, starting with the lowest rank (or, `descending`,
    // the highest); false when its threads deadlocked at a barrier.
    bool run_block(dim3 index, dim3 shape, dim3 grid, void (*body)(void*), void* argument, bool descending);

    // The first rank of a scope (the ranks from `lowest` to `highest`) in the launch's order.
    int first_of(int lowest, int highest) const { return step_ > 0 ? lowest : highest; }

    // Blocks the calling fiber at `barrier` until every live thread of its scope (whose first rank in the launch's
    // order is `first`) has arrived; the arrival that releases it passes control to the scope's first runnable thread.
    void wait(Barrier& barrier, int first)
    {
        if (barrier.arrive()) return schedule(first);
        Fiber& fiber = fibers_[current_];
        fiber.waiting = &barrier;
        fiber.generation = barrier.generation;
        schedule(after(current_));
        fiber.waiting = nullptr;
    }
    void wait_block() { wait(block, first_of(0, threads - 1)); }
    void wait_warp(int warp) { wait(warps[warp], first_of(warp * 32, warp * 32 + warp_size(warp) - 1)); }
};

inline void Worker::switch_to(int next)
{
    int previous = current_;
    current_ = next;
    Context::swap(fibers_[previous].context, fibers_[next].context);
}

// Passes control to the first runnable fiber from rank `from` on in the launch's order (round robin; the current one
// keeps running if it is that one), or home when none is left.
inline void Worker::schedule(int from)
{
    // The returned threads at the start of the order never run again: the scan goes round the others only, and finds
    // the same fiber as one round all threads, without walking them at every return (which made a block quadratic).
    auto skip_returned = [this](int rank) { return place(rank) < returned_ ? rank_at(returned_) : rank; };
    for (int step = returned_, next = skip_returned(from); step < threads; step++, next = skip_returned(after(next)))
    {
        if (!fibers_[next].runnable()) continue;
        if (next != current_) switch_to(next);
        return;
    }
    // Nothing can run: the block is finished, or its live threads wait at barriers others never reach.
    deadlocked = live_ > 0;
    Context::swap(fibers_[current_].context, home_);
}

inline void Worker::fiber_main()
{
    Worker& w = *self().worker;
    w.body_(w.argument_);
    Fiber& fiber = w.fibers_[w.current_];
    fiber.done = true;
    w.live_--;
    while (w.returned_ < w.threads && w.fibers_[w.rank_at(w.returned_)].done) w.returned_++;
    w.block.leave();
    w.warps[w.current_ / 32].leave();
    w.schedule(w.first_of(0, w.threads - 1));
    std::abort(); // a finished fiber is never resumed
}

inline bool Worker::run_block(dim3 index, dim3 shape, dim3 grid, void (*body)(void*), void* argument, bool descending)
{
    threads = (int)(shape.x * shape.y * shape.z);
    int warp_count = (threads + 31) / 32;
    if ((int)warps.size() < warp_count) warps.resize(warp_count), warp_results.resize(warp_count);
    slots.resize(2 * (size_t)threads);
    gathers.resize(2 * (size_t)GatherWords * threads);
    block.reset(threads);
    for (int w = 0; w < warp_count; w++) warps[w].reset(warp_size(w));
    body_ = body;
    argument_ = argument;
    for (int t = 0; t < threads; t++)
    {
        Fiber& fiber = fibers_[t];
        *fiber.self = Self{dim3(t % shape.x, t / shape.x % shape.y, t / (shape.x * shape.y)), index, shape, grid, t, this};
        fiber.waiting = nullptr;
        fiber.exchanges = 0;
        fiber.done = false;
#if defined(__SANITIZE_ADDRESS__)
        // The fiber that ran on this stack before left its last frames without returning from them (fiber_main hands
        // over for good; a deadlocked block's threads stay at their barriers), so ASan's shadow still marks their
        // redzones, where the next frames' locals would trip on them: clear it.
        if (char* low = fiber.context.left_at()) __asan_unpoison_memory_region(low, stacks_ + (t + 1) * StackBytes - low);
#endif
        fiber.context.make(stacks_ + t * StackBytes, StackBytes - sizeof(Self), &Worker::fiber_main);
    }
    live_ = threads;
    returned_ = 0;
    deadlocked = false;
    step_ = descending ? -1 : 1;
    current_ = descending ? threads - 1 : 0;
    Context::swap(home_, fibers_[current_].context);
    return !deadlocked;
}

// A shuffle: every live lane of the warp writes its value, waits for the others, then reads its source lane's. The
// next shuffle writes the other slot of the pair; no lane can reach the one after before every lane has passed the
// next one's barrier, by which time this one's values have all been read.
template <class T>
T exchange(T value, int source_lane)
{
    static_assert(sizeof(T) <= 8, "cuemu shuffles carry at most 8 bytes");
    Self& me = self();
    Worker& w = *me.worker;
    int warp = me.rank / 32;
    unsigned round = w.next_exchange();
    uint64_t* slots = w.slots.data() + (round & 1) * w.threads;
    uint64_t bits = 0;
    std::memcpy(&bits, &value, sizeof(T));
    slots[me.rank] = bits;
    w.wait_warp(warp);
    T result;
    int source = warp * 32 + source_lane;
    if (w.took_part(source, round)) std::memcpy(&result, &slots[source], sizeof(T));
    else std::memset(&result, 0xFF, sizeof(T)); // an inactive lane: undefined on a GPU
    return result;
}

// A warp's all-gather, for the emulation of warp-wide instructions: every live lane publishes `value`, and after one
// barrier (where a shuffle per value would take one each) reads the warp's 32 values, indexed by lane. An exchange
// like a shuffle: it shares their parity, so the values stay readable until the lane's next exchange.
template <class T>
const T* warp_all_gather(const T& value)
{
    static_assert(sizeof(T) <= Worker::GatherWords * sizeof(uint64_t), "cuemu all-gathers carry at most 40 bytes a lane");
    Self& me = self();
    Worker& w = *me.worker;
    unsigned round = w.next_exchange();
    auto* area = reinterpret_cast<unsigned char*>(w.gathers.data() + (round & 1) * Worker::GatherWords * w.threads);
    std::memcpy(area + me.rank * sizeof(T), &value, sizeof(T));
    int first = me.rank / 32 * 32;
    w.wait_warp(first / 32);
    // Lanes that returned first read as all-ones bits, as from a shuffle (every reader of the round writes the same).
    if (w.warps[first / 32].expected < w.warp_size(first / 32)) // some lane has returned
        for (int lane = 0; lane < w.warp_size(first / 32); lane++)
            if (!w.took_part(first + lane, round)) std::memset(area + (first + lane) * sizeof(T), 0xFF, sizeof(T));
    return reinterpret_cast<const T*>(area + first * sizeof(T));
}

inline int lane() { return self().rank % 32; }

// p, for an access of `bytes` at once; one at an address not aligned to them is noted (the launch then fails, as on a
// GPU). Typed void pointers keep the caller's const.
inline void* check_aligned(void* p, size_t bytes)
{
    if (((uintptr_t)p & (bytes - 1)) != 0) [[unlikely]]
    {
        Worker& w = *self().worker;
        if (!w.misaligned) w.misaligned = p, w.misaligned_bytes = bytes;
    }
    return p;
}
inline const void* check_aligned(const void* p, size_t bytes) { return check_aligned(const_cast<void*>(p), bytes); }
} // namespace cuemu

inline void __syncthreads()
{
    cuemu::self().worker->wait_block();
}
inline void __syncwarp(unsigned = 0xffffffffu)
{
    cuemu::Self& me = cuemu::self();
    me.worker->wait_warp(me.rank / 32);
}

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

namespace cuemu
{
// What every lane of a whole warp reads right after an all-gather: compute(result) runs once, on the first lane past
// the gather's barrier, and the others read its result (up to 512 bytes), keyed by the barrier's generation, which no
// later exchange of the warp can move before they have read it. For results that are the same in every lane, computed
// from the gathered values alone.
template <class R, class Compute>
const R& warp_once(Compute compute)
{
    static_assert(sizeof(R) <= sizeof(Worker::WarpResult::bytes), "cuemu warp results carry at most 512 bytes");
    Self& me = self();
    Worker& w = *me.worker;
    int warp = me.rank / 32;
    Worker::WarpResult& result = w.warp_results[warp];
    R* value = reinterpret_cast<R*>(result.bytes);
    if (unsigned generation = w.warps[warp].generation; result.generation != generation)
    {
        compute(*value);
        result.generation = generation;
    }
    return *value;
}

// What each lane of a whole warp gets from five xor shuffles with masks 16, 8, 4, 2, 1, each step v = op(v, the
// partner's v) (common.cuh's warp_sum and warp_max): the warp's values gathered with one barrier instead of five, then
// the 31 steps of lane 0's tree, s[k] holding the value of lane k at each step. Each step leaves a lane and its partner
// op(own, other) and op(other, own), the same value as op commutes, so every lane ends with lane 0's, computed once for
// the warp. A partial warp shuffles.
template <class T, class Op>
T warp_butterfly(T v, Op op)
{
    Self& me = self();
    if (me.worker->warp_size(me.rank / 32) < 32)
    {
        for (int mask = 16; mask > 0; mask >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, mask));
        return v;
    }
    const T* x = warp_all_gather(v);
    return warp_once<T>([&](T& result)
    {
        T s[16];
        for (int k = 0; k < 16; k++) s[k] = op(x[k], x[k ^ 16]);
        for (int mask = 8; mask > 0; mask >>= 1)
            for (int k = 0; k < mask; k++) s[k] = op(s[k], s[k + mask]);
        result = s[0];
    });
}
} // namespace cuemu

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
// A product rounded on its own and never fused into a following add, as CUDA's __fmul_rn: the volatile holds the
// rounded value, so a build with FMA contraction (tools/sanitize-emulator.sh contract) keeps it apart too.
inline float __fmul_rn(float a, float b)
{
    volatile float p = a * b;
    return p;
}
inline float __int_as_float(int bits) { return std::bit_cast<float>(bits); }
inline int __float_as_int(float x) { return std::bit_cast<int>(x); }
template <class T> T __ldg(const T* p) { return *p; }

extern "C" void* __tls_get_addr(void* index); // glibc: the calling thread's block of a module's thread_locals

namespace cuemu
{
// The library's thread_locals are the kernels' __shared__ arrays and nothing else, so a worker's copy of every one of
// them is the library's TLS block: its module id and size, found once from the program headers.
struct SharedArrays
{
    size_t module = 0, bytes = 0;
    void* base = nullptr; // where this library is loaded

    static int visit(dl_phdr_info* info, size_t, void* found)
    {
        auto* arrays = (SharedArrays*)found;
        if ((void*)info->dlpi_addr != arrays->base) return 0;
        for (int i = 0; i < info->dlpi_phnum; i++)
            if (info->dlpi_phdr[i].p_type == PT_TLS) arrays->module = info->dlpi_tls_modid, arrays->bytes = info->dlpi_phdr[i].p_memsz;
        return 1;
    }

    // dladdr before dl_iterate_phdr, not inside it: each takes one of the loader's two locks, and a dlopen on another
    // thread takes them in the other order.
    SharedArrays()
    {
        Dl_info self;
        if (dladdr((void*)&visit, &self)) base = self.dli_fbase, dl_iterate_phdr(visit, this);
    }

    // Fills the calling worker's shared arrays with 0xFF bytes (NaN in fp32, bf16 and fp16) before it runs a block: on
    // a GPU a block's shared memory holds whatever was there, so a kernel that reads shared memory before writing it
    // would read NaN here rather than the previous block's values.
    void poison() const
    {
        if (bytes == 0) return;
        size_t index[2] = {module, 0};
        std::memset(__tls_get_addr(index), 0xFF, bytes);
    }
};

inline const SharedArrays& shared_arrays()
{
    static const SharedArrays found;
    return found;
}

// The workers: the launching thread drives worker 0, pool threads (created once) the others; blocks are handed out
// in order from a shared counter.
class Pool
{
    std::vector<Worker*> workers_;
    std::vector<std::thread> threads_;
    std::atomic<unsigned> generation_{0};
    std::atomic<int> finished_{0};
    std::atomic<unsigned> next_block_{0};
    std::atomic<bool> deadlocked_{false};
    std::mutex launch_mutex_;
    dim3 grid_, block_;
    unsigned block_count_ = 0;
    bool descending_ = false;
    int active_ = 0, wanted_ = 1;
    void (*body_)(void*) = nullptr;
    void* argument_ = nullptr;

    void run_blocks(Worker& w)
    {
        for (unsigned taken = next_block_.fetch_add(1); taken < block_count_; taken = next_block_.fetch_add(1))
        {
            unsigned b = descending_ ? block_count_ - 1 - taken : taken;
            dim3 index(b % grid_.x, b / grid_.x % grid_.y, b / (grid_.x * grid_.y));
            shared_arrays().poison();
            if (!w.run_block(index, block_, grid_, body_, argument_, descending_)) deadlocked_ = true;
        }
    }

    // A pool thread's loop: wait for a launch newer than `seen`, run its share, report.
    void serve(int rank, unsigned seen)
    {
        for (;;)
        {
            while (generation_.load(std::memory_order_acquire) == seen) generation_.wait(seen);
            seen = generation_.load(std::memory_order_acquire);
            if (rank < active_) run_blocks(*workers_[rank]);
            if (finished_.fetch_add(1, std::memory_order_acq_rel) + 1 == (int)threads_.size()) finished_.notify_all();
        }
    }

    // Worker `rank` and, past the first, the pool thread that drives it.
    void add_worker()
    {
        int rank = (int)workers_.size();
        workers_.push_back(new Worker());
        if (rank == 0) return;
        unsigned seen = generation_.load(); // made before the launch that needs it moves the generation
        threads_.emplace_back([this, rank, seen] { serve(rank, seen); });
        threads_.back().detach();
    }

public:
    Pool() { add_worker(); }

    // Uses `count` workers (at least 1) from the next launch on; threads are made on first need and kept.
    void set_workers(int count)
    {
        std::lock_guard lock(launch_mutex_);
        wanted_ = std::clamp(count, 1, 256);
    }

    // How a launch went: whether some block's threads deadlocked, and its first misaligned wide access (null when none).
    struct Outcome
    {
        bool deadlocked;
        const void* misaligned;
        size_t misaligned_bytes;
    };

    // Runs body(argument) on every thread of every block, in ascending or `descending` order.
    Outcome launch(dim3 grid, dim3 block, void (*body)(void*), void* argument, bool descending)
    {
        std::lock_guard lock(launch_mutex_);
        descending_ = descending;
        grid_ = grid;
        block_ = block;
        body_ = body;
        argument_ = argument;
        block_count_ = grid.x * grid.y * grid.z;
        active_ = (int)std::min<unsigned>(block_count_, (unsigned)wanted_);
        while ((int)workers_.size() < active_) add_worker();
        next_block_ = 0;
        deadlocked_ = false;
        if (active_ > 1)
        {
            finished_.store(0);
            generation_.fetch_add(1, std::memory_order_release);
            generation_.notify_all();
        }
        run_blocks(*workers_[0]);
        if (active_ > 1)
            for (int done = finished_.load(); done < (int)threads_.size(); done = finished_.load()) finished_.wait(done);
        Outcome outcome{deadlocked_, nullptr, 0};
        for (int rank = 0; rank < active_; rank++)
        {
            Worker& w = *workers_[rank];
            if (w.misaligned && !outcome.misaligned) outcome.misaligned = w.misaligned, outcome.misaligned_bytes = w.misaligned_bytes;
            w.misaligned = nullptr;
        }
        return outcome;
    }
};

inline Pool& pool()
{
    static Pool* instance = new Pool(); // never destroyed: detached workers outlive static destruction
    return *instance;
}
} // namespace cuemu
