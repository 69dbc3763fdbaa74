// launcher.h: the emulated device's entry points, included last by the generated unity file, which first
// includes every cuda/*.cu and defines CUEMU_KERNEL_LIST(X) as X(name) for each extern "C" kernel.
// cuemu_launch looks like cuLaunchKernel, with the argument sizes checked against the kernel's signature.
#pragma once
#include <cstdio>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <utility>

namespace cuemu
{
struct Kernel
{
    const char* name;
    int arg_count;
    const size_t* arg_sizes;
    void (*invoke)(void** args);
};

// An argument's value copied out of the caller's slot: as for cuLaunchKernel, a slot need not be aligned for its type
// (a replayed graph packs its launches' arguments back to back).
template <class T> T argument(const void* slot)
{
    static_assert(std::is_trivially_copyable_v<T>, "kernel arguments are copied bytewise");
    T value;
    std::memcpy(&value, slot, sizeof(T));
    return value;
}

template <auto Fn, class... A, size_t... I> void invoke(void** args, std::index_sequence<I...>)
{
    Fn(argument<std::remove_cvref_t<A>>(args[I])...);
}

template <auto Fn, class... A> Kernel describe(const char* name, void (*)(A...))
{
    static constexpr size_t sizes[sizeof...(A) + 1] = {sizeof(A)..., 0};
    return {name, (int)sizeof...(A), sizes, [](void** args) { invoke<Fn, A...>(args, std::index_sequence_for<A...>{}); }};
}

#define CUEMU_DESCRIBE(name) cuemu::describe<&name>(#name, &name),
inline const Kernel kernels[] = {CUEMU_KERNEL_LIST(CUEMU_DESCRIBE)};
inline constexpr int kernel_count = sizeof(kernels) / sizeof(kernels[0]);

struct Call
{
    const Kernel* kernel;
    void** args;
};
} // namespace cuemu

#define CUEMU_EXPORT extern "C" __attribute__((visibility("default")))

CUEMU_EXPORT int cuemu_kernel_count() { return cuemu::kernel_count; }

CUEMU_EXPORT const char* cuemu_kernel_name(int index)
{
    return index >= 0 && index < cuemu::kernel_count ? cuemu::kernels[index].name : nullptr;
}

// Shares each launch's blocks among `count` workers (the engine passes its CPU thread count).
CUEMU_EXPORT void cuemu_set_workers(int count) { cuemu::pool().set_workers(count); }

// Runs kernel `name` on grid × block threads, in ascending order or (`descending` non-zero) descending (cuemu.h);
// returns 0, or non-zero with a message in `error`.
CUEMU_EXPORT int cuemu_launch(const char* name, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                            unsigned shared_bytes, int descending, void** args, const long long* arg_sizes, int arg_count, char* error,
                            int error_capacity)
{
    const cuemu::Kernel* kernel = nullptr;
    for (const auto& k : cuemu::kernels)
        if (std::strcmp(k.name, name) == 0) kernel = &k;
    if (!kernel) return std::snprintf(error, error_capacity, "no kernel named '%s' in the emulated device", name), 1;
    if (arg_count != kernel->arg_count)
        return std::snprintf(error, error_capacity, "kernel %s takes %d arguments, launch passed %d", name, kernel->arg_count,
                             arg_count), 2;
    for (int i = 0; i < arg_count; i++)
        if ((size_t)arg_sizes[i] != kernel->arg_sizes[i])
            return std::snprintf(error, error_capacity, "kernel %s argument %d is %zu bytes, launch passed %lld", name, i,
                                 kernel->arg_sizes[i], arg_sizes[i]), 3;
    unsigned threads = bx * by * bz;
    if (threads == 0 || threads > 1024 || gx == 0 || gy == 0 || gz == 0)
        return std::snprintf(error, error_capacity, "kernel %s: invalid launch grid (%u,%u,%u) block (%u,%u,%u)", name, gx, gy,
                             gz, bx, by, bz), 4;
    if (shared_bytes != 0)
        return std::snprintf(error, error_capacity, "kernel %s: dynamic shared memory is not emulated", name), 5;
    cuemu::Call call{kernel, args};
    cuemu::Pool::Outcome outcome = cuemu::pool().launch(dim3(gx, gy, gz), dim3(bx, by, bz),
                                          [](void* context) {
                                              auto* c = static_cast<cuemu::Call*>(context);
                                              c->kernel->invoke(c->args);
                                          },
                                          &call, descending != 0);
    if (outcome.misaligned)
        return std::snprintf(error, error_capacity,
                             "kernel %s made a %zu-byte access at %p, which is not aligned to its size (a GPU faults: misaligned "
                             "address)", name, outcome.misaligned_bytes, outcome.misaligned), 7;
    if (outcome.deadlocked)
        return std::snprintf(error, error_capacity,
                             "kernel %s deadlocked: threads of a block wait at a barrier (__syncthreads, __syncwarp or a "
                             "shuffle) that the block's other live threads never reach", name), 6;
    return 0;
}
