// Kernels that test the emulation itself (tests/test_cuda_emulated.py): launches that break
// a hardware limit, shuffles, shared memory read before it is written, and CUDA's float
// conversions. Built into the emulated library like csrc/cuda's files; called through ctypes.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace {

__global__ void __launch_bounds__(64) bounded_kernel() {}

__global__ void plain_kernel() {}

template <int kFloats>
__global__ void static_shared_kernel(float* out) {
  __shared__ float a[kFloats / 2];
  __shared__ float b[kFloats - kFloats / 2];
  a[threadIdx.x] = 1.0f;
  b[threadIdx.x] = 2.0f;
  __syncthreads();
  out[threadIdx.x] = a[threadIdx.x] + b[threadIdx.x];
}

__global__ void dynamic_shared_kernel(float* out) {
  extern __shared__ float dynamic[];
  dynamic[threadIdx.x] = static_cast<float>(threadIdx.x);
  __syncthreads();
  out[threadIdx.x] = dynamic[blockDim.x - 1 - threadIdx.x];
}

// out[t] = Σ over t's warp of lane ids, by butterfly shuffles with the given first offset
// (16 is right; 32 reaches outside the warp, which returns the caller's own value).
__global__ void warp_sum_kernel(float* out, int first_offset) {
  float v = static_cast<float>(threadIdx.x % 32);
  for (int offset = first_offset; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  out[threadIdx.x] = v;
}

// Half the warp returns before the others shuffle: the readers of those lanes get nothing.
__global__ void shuffle_exited_lane_kernel(float* out) {
  if (threadIdx.x % 32 >= 16) return;
  out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.0f, 16);
}

__global__ void unwritten_shared_kernel(float* out) {
  __shared__ float values[32];
  if (threadIdx.x > 0) values[threadIdx.x] = 1.0f;
  __syncthreads();
  out[threadIdx.x] = values[(threadIdx.x + 31) % 32];
}

}  // namespace

extern "C" {

int probe_launch_bounds(unsigned threads) {
  bounded_kernel<<<1, threads>>>();
  return cudaGetLastError();
}

int probe_launch_shape(unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz) {
  plain_kernel<<<dim3(gx, gy, gz), dim3(bx, by, bz)>>>();
  return cudaGetLastError();
}

// kib: 32 or 56 KiB of __shared__ variables (the limit is 48 KiB).
int probe_static_shared(int kib, float* out) {
  if (kib == 32) {
    static_shared_kernel<32 * 256><<<1, 32>>>(out);
  } else {
    static_shared_kernel<56 * 256><<<1, 32>>>(out);
  }
  return cudaGetLastError();
}

int probe_dynamic_shared(int bytes, int opt_in, float* out) {
  if (opt_in) {
    const cudaError_t err = cudaFuncSetAttribute(dynamic_shared_kernel,
                                                 cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
    if (err != cudaSuccess) return cudaGetLastError();  // and clear it, as the launch below would
  }
  dynamic_shared_kernel<<<1, 64, static_cast<size_t>(bytes)>>>(out);
  return cudaGetLastError();
}

int probe_warp_sum(float* out, unsigned threads, int first_offset) {
  warp_sum_kernel<<<1, threads>>>(out, first_offset);
  return cudaGetLastError();
}

int probe_shuffle_exited_lane(float* out) {
  shuffle_exited_lane_kernel<<<1, 32>>>(out);
  return cudaGetLastError();
}

int probe_unwritten_shared(float* out) {
  unwritten_shared_kernel<<<1, 32>>>(out);
  return cudaGetLastError();
}

const char* probe_error_string(int error) { return cudaGetErrorString(static_cast<cudaError_t>(error)); }

void probe_float_to_half(const float* in, uint16_t* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = __float2half_rn(in[i]).__x;
}

void probe_float_to_bfloat16(const float* in, uint16_t* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = __float2bfloat16_rn(in[i]).__x;
}

void probe_half_to_float(const uint16_t* in, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = __half2float(__half{in[i]});
}

void probe_bfloat16_to_float(const uint16_t* in, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = __bfloat162float(__nv_bfloat16{in[i]});
}

}  // extern "C"
