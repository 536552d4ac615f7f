// Device side of the CPU emulation (tests/cuda_cpu): what a kernel file sees in place of
// nvcc's built-ins. tests/cuda_cpu/__init__.py rewrites each .cu/.cuh file so that
//   kernel<<<grid, block, shared, stream>>>(args)  becomes
//       kernel | ::cuda_emu::config(grid, block, shared, stream)(args);
//   __shared__ T name[N];                           becomes  a per-block object:
//       static char name__key; auto& name = ::cuda_emu::block_shared<T[N]>(&name__key);
//   extern __shared__ T name[];                     becomes  T* name = dynamic_shared<T>();
//   __global__ void __launch_bounds__(N) k(...) {   becomes  ... k(...) { enter_kernel(...);
// keeping every line where it was, and includes this header first.
//
// Execution (runtime.cpp): the blocks of a launch run one after another; each CUDA thread
// of a block is an OS thread of a pool. __syncthreads is a barrier that a returning thread
// leaves (as on sm_70 and later); __shfl_xor_sync exchanges through a per-warp barrier.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <math.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __align__(n) __attribute__((aligned(n)))
#define __launch_bounds__(...)

extern thread_local uint3 threadIdx;
extern thread_local uint3 blockIdx;
extern thread_local dim3 blockDim;
extern thread_local dim3 gridDim;
constexpr int warpSize = 32;

namespace cuda_emu {

// Raises the fault that ends this thread and fails the launch with `message`.
[[noreturn]] void fail(const char* message);
[[noreturn]] void failf(const char* format, ...) __attribute__((format(printf, 1, 2)));

// First statement of every kernel: checks the block against the kernel's
// __launch_bounds__ (1024 when it has none) and names the kernel for messages.
void enter_kernel(const char* name, int max_threads);

// The block's copy of a __shared__ variable, allocated (filled with 0xff bytes, so that a
// read before any write shows) when a thread of the block first reaches its declaration.
void* block_shared_bytes(const void* key, size_t bytes, size_t alignment);
template <typename T>
T& block_shared(const void* key) {
  static_assert(std::is_trivially_destructible_v<T>, "__shared__ variables hold plain data");
  return *static_cast<T*>(block_shared_bytes(key, sizeof(T), alignof(T)));
}

// The launch's dynamic shared memory (extern __shared__).
void* dynamic_shared_bytes();
template <typename T>
T* dynamic_shared() {
  return static_cast<T*>(dynamic_shared_bytes());
}

void syncthreads();
// The values of the calling warp's lanes: each lane deposits `bits`, then reads lane src's.
uint64_t shuffle(unsigned mask, uint64_t bits, int src_lane);

// A launch: config(...)(args...) collects the configuration and the arguments; `kernel |`
// runs it. Each CUDA thread calls the kernel with its own copies of the arguments.
struct LaunchConfig {
  dim3 grid, block;
  size_t shared_bytes;
  cudaStream_t stream;
};

template <typename... Args>
struct PendingLaunch {
  LaunchConfig config;
  std::tuple<Args...> args;
};

struct Config {
  LaunchConfig config;
  template <typename... Args>
  PendingLaunch<std::decay_t<Args>...> operator()(Args&&... args) const {
    return {config, std::tuple<std::decay_t<Args>...>(std::forward<Args>(args)...)};
  }
};

inline Config config(dim3 grid, dim3 block, size_t shared_bytes = 0, cudaStream_t stream = nullptr) {
  return {{grid, block, shared_bytes, stream}};
}

void launch(const void* kernel, const LaunchConfig& config, const std::function<void()>& thread_body);

template <typename... Params, typename... Args>
void operator|(void (*kernel)(Params...), PendingLaunch<Args...>&& pending) {
  static_assert(sizeof...(Params) == sizeof...(Args), "kernel launched with the wrong argument count");
  launch(reinterpret_cast<const void*>(kernel), pending.config, [&]() {
    std::apply([&](const Args&... args) { kernel(args...); }, pending.args);
  });
}

}  // namespace cuda_emu

inline void __syncthreads() { cuda_emu::syncthreads(); }

// PTX shfl.bfly: lane ^ lane_mask within the lane's segment of `width` lanes; a source
// outside it gives the caller its own value.
template <typename T>
T __shfl_xor_sync(unsigned mask, T value, int lane_mask, int width = warpSize) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= sizeof(uint64_t),
                "__shfl_xor_sync moves at most 64 bits");
  const int lane = static_cast<int>((threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z)) % warpSize);
  const int segment_first = lane & ~(width - 1);
  int src = lane ^ lane_mask;
  if (src < segment_first || src > (segment_first | (width - 1)) || src >= warpSize) src = lane;
  uint64_t bits = 0;
  std::memcpy(&bits, &value, sizeof(T));
  bits = cuda_emu::shuffle(mask, bits, src);
  std::memcpy(&value, &bits, sizeof(T));
  return value;
}

// Products and sums rounded once (the emulation builds with -ffp-contract=off).
inline float __fmul_rn(float a, float b) { return a * b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline double __dadd_rn(double a, double b) { return a + b; }
