// The CPU emulation's runtime (tests/cuda_cpu): runs the launches of the rewritten kernel
// files (see include/cuda_cpu_device.h) and serves the CUDA runtime calls the launchers make.
//
// A launch's blocks run one after another. The threads of a block are OS threads from a
// pool, so the kernel's threads really run concurrently (and ThreadSanitizer sees their
// races). Every launch is checked against the hardware's limits (an H200's by default; the
// tests can change the device attributes), and a launch that breaks one fails with the
// limit named, through cudaGetLastError and cudaGetErrorString.
#include <cuda_cpu_device.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

thread_local uint3 threadIdx;
thread_local uint3 blockIdx;
thread_local dim3 blockDim;
thread_local dim3 gridDim;

namespace cuda_emu {
namespace {

constexpr size_t kStaticSharedLimit = 48 * 1024;  // per block, for __shared__ variables
constexpr size_t kDefaultDynamicLimit = 48 * 1024;  // above it only after cudaFuncSetAttribute
constexpr unsigned kMaxThreadsPerBlock = 1024;
constexpr unsigned kMaxGridX = 2147483647u, kMaxGridYZ = 65535;
constexpr size_t kSharedAlignment = 256;
constexpr unsigned char kPoison = 0xff;  // fills shared memory: NaN as a float, -1 as an int

// A fault ends the thread that raises it and fails the launch.
struct Fault {
  cudaError_t code;
  std::string message;
};

std::string vformat(const char* format, va_list args) {
  va_list copy;
  va_copy(copy, args);
  const int n = std::vsnprintf(nullptr, 0, format, copy);
  va_end(copy);
  std::string out(n > 0 ? static_cast<size_t>(n) : 0, '\0');
  std::vsnprintf(out.data(), out.size() + 1, format, args);
  return out;
}

std::string format(const char* format, ...) __attribute__((format(printf, 1, 2)));
std::string format(const char* format, ...) {
  va_list args;
  va_start(args, format);
  std::string out = vformat(format, args);
  va_end(args);
  return out;
}

// The device an emulated launch is checked against: an H200 (sm_90) unless a test says
// otherwise (cuda_emu_set_device_attribute).
std::mutex device_mutex;
std::map<int, int> device_attributes = {
    {cudaDevAttrMaxThreadsPerBlock, 1024},
    {cudaDevAttrMaxBlockDimX, 1024},
    {cudaDevAttrMaxBlockDimY, 1024},
    {cudaDevAttrMaxBlockDimZ, 64},
    {cudaDevAttrMaxGridDimX, static_cast<int>(kMaxGridX)},
    {cudaDevAttrMaxGridDimY, static_cast<int>(kMaxGridYZ)},
    {cudaDevAttrMaxGridDimZ, static_cast<int>(kMaxGridYZ)},
    {cudaDevAttrMaxSharedMemoryPerBlock, 48 * 1024},
    {cudaDevAttrWarpSize, 32},
    {cudaDevAttrMultiProcessorCount, 132},
    {cudaDevAttrMaxThreadsPerMultiProcessor, 2048},
    {cudaDevAttrComputeCapabilityMajor, 9},
    {cudaDevAttrComputeCapabilityMinor, 0},
    {cudaDevAttrMaxSharedMemoryPerMultiprocessor, 228 * 1024},
    {cudaDevAttrMaxBlocksPerMultiprocessor, 32},
    {cudaDevAttrMaxSharedMemoryPerBlockOptin, 227 * 1024},
};

int device_attribute(int attr) {
  const std::lock_guard<std::mutex> lock(device_mutex);
  const auto it = device_attributes.find(attr);
  return it == device_attributes.end() ? -1 : it->second;
}

size_t optin_shared() { return static_cast<size_t>(device_attribute(cudaDevAttrMaxSharedMemoryPerBlockOptin)); }

// What the emulator knows of each kernel: its attributes, and what its launches declared.
struct KernelRecord {
  std::string name;           // from its first thread's enter_kernel
  int max_threads = 1024;     // its __launch_bounds__, once it has run
  size_t static_shared = 0;   // the most __shared__ bytes a block of it allocated
  int max_dynamic_shared = static_cast<int>(kDefaultDynamicLimit);
};
std::mutex kernels_mutex;
std::unordered_map<const void*, KernelRecord> kernels;

// The host thread's last error, as cudaGetLastError returns it, and the account of it.
thread_local cudaError_t last_error = cudaSuccess;
std::mutex message_mutex;
std::string last_message;
cudaError_t last_message_code = cudaSuccess;

cudaError_t set_error(cudaError_t code, const std::string& message) {
  last_error = code;
  const std::lock_guard<std::mutex> lock(message_mutex);
  last_message = message;
  last_message_code = code;
  return code;
}

double deadlock_seconds() {
  const char* value = std::getenv("FASTFLOW_EMULATE_TIMEOUT");
  return value != nullptr ? std::atof(value) : 120.0;
}

// A barrier that a thread may leave for good (arrive-and-drop), as a returning CUDA thread
// leaves __syncthreads. A wait with no progress for FASTFLOW_EMULATE_TIMEOUT seconds (a
// barrier that some thread never reaches) aborts the process with a message: the threads
// can't be unblocked.
class Barrier {
 public:
  void reset(int expected) {
    expected_ = expected;
    arrived_ = 0;
  }

  // on_complete runs under the barrier's lock, in the last thread to arrive.
  template <typename F>
  void wait(const char* where, F&& on_complete) {
    std::unique_lock<std::mutex> lock(mutex_);
    const uint64_t phase = phase_;
    if (++arrived_ == expected_) {
      on_complete();
      advance();
      return;
    }
    const auto limit = std::chrono::duration<double>(deadlock_seconds());
    if (!released_.wait_for(lock, limit, [&] { return phase_ != phase; })) {
      std::fprintf(stderr,
                   "fastflow CUDA emulator: no progress for %.0f s at %s (%d of %d threads "
                   "arrived): some thread never reaches this barrier\n",
                   limit.count(), where, arrived_, expected_);
      std::abort();
    }
  }

  void drop(const std::function<void()>& on_complete) {
    const std::lock_guard<std::mutex> lock(mutex_);
    --expected_;
    if (arrived_ > 0 && arrived_ == expected_) {
      on_complete();
      advance();
    }
  }

 private:
  void advance() {
    arrived_ = 0;
    ++phase_;
    released_.notify_all();
  }

  std::mutex mutex_;
  std::condition_variable released_;
  int expected_ = 0, arrived_ = 0;
  uint64_t phase_ = 0;
};

struct Warp {
  Barrier barrier;
  uint64_t slots[32];
  std::atomic<uint32_t> deposited{0};  // lanes that deposited in this round
  uint32_t round = 0;                  // the lanes of the last completed round
};

// One block in flight: its barrier, warps and shared memory.
struct Block {
  explicit Block(int threads) : threads(threads), warps((threads + 31) / 32) {
    barrier.reset(threads);
    for (int w = 0; w < static_cast<int>(warps.size()); ++w) {
      warps[w].barrier.reset(std::min(32, threads - 32 * w));
    }
  }
  ~Block() {
    for (const auto& object : statics) ::operator delete(object.second, std::align_val_t(kSharedAlignment));
    if (dynamic != nullptr) ::operator delete(dynamic, std::align_val_t(kSharedAlignment));
  }

  int threads;
  Barrier barrier;
  std::vector<Warp> warps;
  std::mutex shared_mutex;
  std::vector<std::pair<const void*, void*>> statics;  // declaration key -> this block's copy
  size_t static_bytes = 0;
  void* dynamic = nullptr;
  size_t dynamic_bytes = 0;
};

void* poisoned_allocation(size_t bytes) {
  void* p = ::operator new(bytes > 0 ? bytes : 1, std::align_val_t(kSharedAlignment));
  std::memset(p, kPoison, bytes);
  return p;
}

// The launch in flight (one at a time, under launch_mutex).
struct Launch {
  const void* kernel;
  LaunchConfig config;
  dim3 grid;  // what the blocks see as gridDim (the launch's, or capped)
  uint3 block_index;
  Block* block = nullptr;
  std::mutex mutex;  // guards the fields below
  std::string name;
  int max_threads = -1;
  bool failed = false;
  cudaError_t code = cudaSuccess;
  std::string failure;
  std::atomic<bool> stop{false};
};
std::mutex launch_mutex;
Launch* current = nullptr;

// Log of launches since the last reset, for the tests (cuda_emu_launch_log).
std::mutex log_mutex;
std::string launch_log;
unsigned max_blocks_x = 0;  // 0: none; else grid.x is capped (for grid-stride kernels only)

std::string thread_label() {
  return format("block (%u, %u, %u), thread (%u, %u, %u)", blockIdx.x, blockIdx.y, blockIdx.z,
                threadIdx.x, threadIdx.y, threadIdx.z);
}

void record_failure(const Fault& fault) {
  Launch& launch = *current;
  const std::lock_guard<std::mutex> lock(launch.mutex);
  launch.stop = true;
  if (launch.failed) return;
  launch.failed = true;
  launch.code = fault.code;
  launch.failure = format("%s in %s, %s", fault.message.c_str(),
                          launch.name.empty() ? "a kernel" : launch.name.c_str(),
                          thread_label().c_str());
}

int linear_thread() {
  return static_cast<int>(threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z));
}

// Runs job(0 .. n−1) on n pooled threads and waits for them; threads are made as needed
// and kept (detached) for later launches.
class Pool {
 public:
  void run(int n, const std::function<void(int)>& job) {
    std::unique_lock<std::mutex> lock(mutex_);
    while (static_cast<int>(threads_) < n) {
      std::thread(&Pool::work, this, static_cast<int>(threads_)).detach();
      ++threads_;
    }
    job_ = &job;
    active_ = n;
    remaining_ = n;
    ++generation_;
    start_.notify_all();
    done_.wait(lock, [&] { return remaining_ == 0; });
    job_ = nullptr;
  }

 private:
  void work(int index) {
    uint64_t seen = 0;
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      start_.wait(lock, [&] { return generation_ != seen && index < active_; });
      seen = generation_;
      const std::function<void(int)>* job = job_;
      lock.unlock();
      (*job)(index);
      lock.lock();
      if (--remaining_ == 0) done_.notify_one();
    }
  }

  std::mutex mutex_;
  std::condition_variable start_, done_;
  size_t threads_ = 0;
  const std::function<void(int)>* job_ = nullptr;
  int active_ = 0, remaining_ = 0;
  uint64_t generation_ = 0;
};

Pool& pool() {
  static Pool* instance = new Pool;  // never destroyed: its threads outlive main's statics
  return *instance;
}

std::string check_config(const void* kernel, const LaunchConfig& c, cudaError_t* code) {
  const dim3 g = c.grid, b = c.block;
  *code = cudaErrorInvalidConfiguration;
  if (g.x == 0 || g.y == 0 || g.z == 0) {
    return format("grid (%u, %u, %u) has an empty dimension", g.x, g.y, g.z);
  }
  if (b.x == 0 || b.y == 0 || b.z == 0) {
    return format("block (%u, %u, %u) has an empty dimension", b.x, b.y, b.z);
  }
  if (g.x > kMaxGridX) return format("grid.x = %u exceeds the limit of %u", g.x, kMaxGridX);
  if (g.y > kMaxGridYZ) return format("grid.y = %u exceeds the limit of %u", g.y, kMaxGridYZ);
  if (g.z > kMaxGridYZ) return format("grid.z = %u exceeds the limit of %u", g.z, kMaxGridYZ);
  const uint64_t threads = static_cast<uint64_t>(b.x) * b.y * b.z;
  if (b.x > 1024 || b.y > 1024 || b.z > 64 || threads > kMaxThreadsPerBlock) {
    return format("threads per block: block (%u, %u, %u) has %llu threads; the limits are 1024 "
                  "per block, 1024 along x and y and 64 along z",
                  b.x, b.y, b.z, static_cast<unsigned long long>(threads));
  }
  *code = cudaErrorInvalidValue;
  const size_t optin = optin_shared();
  if (c.shared_bytes > optin) {
    return format("dynamic shared memory: %zu bytes exceed the device's %zu per block",
                  c.shared_bytes, optin);
  }
  int allowed;
  {
    const std::lock_guard<std::mutex> lock(kernels_mutex);
    allowed = kernels[kernel].max_dynamic_shared;
  }
  if (c.shared_bytes > static_cast<size_t>(allowed)) {
    return format("dynamic shared memory: %zu bytes exceed the kernel's %d; above 48 KiB a kernel "
                  "needs cudaFuncSetAttribute(cudaFuncAttributeMaxDynamicSharedMemorySize) first",
                  c.shared_bytes, allowed);
  }
  *code = cudaSuccess;
  return {};
}

}  // namespace

void fail(const char* message) { throw Fault{cudaErrorLaunchFailure, message}; }

void failf(const char* fmt, ...) {
  va_list args;
  va_start(args, fmt);
  std::string message = vformat(fmt, args);
  va_end(args);
  throw Fault{cudaErrorLaunchFailure, std::move(message)};
}

void enter_kernel(const char* name, int max_threads) {
  Launch& launch = *current;
  {
    const std::lock_guard<std::mutex> lock(launch.mutex);
    if (launch.name.empty()) launch.name = name;
    launch.max_threads = max_threads;
  }
  const unsigned threads = blockDim.x * blockDim.y * blockDim.z;
  if (threads > static_cast<unsigned>(max_threads)) {
    throw Fault{cudaErrorLaunchOutOfResources,
                format("threads per block: %u exceed the kernel's __launch_bounds__(%d)", threads,
                       max_threads)};
  }
  if (launch.stop) throw Fault{cudaErrorLaunchFailure, "stopped"};
}

void* block_shared_bytes(const void* key, size_t bytes, size_t alignment) {
  Block& block = *current->block;
  if (alignment > kSharedAlignment) fail("__shared__ variable aligned beyond 256 bytes");
  const std::lock_guard<std::mutex> lock(block.shared_mutex);
  for (const auto& object : block.statics) {
    if (object.first == key) return object.second;
  }
  block.static_bytes += bytes;
  if (block.static_bytes > kStaticSharedLimit) {
    throw Fault{cudaErrorLaunchOutOfResources,
                format("static shared memory: %zu bytes of __shared__ variables exceed 48 KiB",
                       block.static_bytes)};
  }
  if (block.static_bytes + block.dynamic_bytes > optin_shared()) {
    throw Fault{cudaErrorLaunchOutOfResources,
                format("shared memory: %zu static + %zu dynamic bytes exceed the device's %zu per "
                       "block",
                       block.static_bytes, block.dynamic_bytes, optin_shared())};
  }
  void* p = poisoned_allocation(bytes);
  block.statics.emplace_back(key, p);
  return p;
}

void* dynamic_shared_bytes() { return current->block->dynamic; }

void syncthreads() {
  Launch& launch = *current;
  if (launch.stop) throw Fault{cudaErrorLaunchFailure, "stopped"};
  launch.block->barrier.wait("__syncthreads", [] {});
  if (launch.stop) throw Fault{cudaErrorLaunchFailure, "stopped"};
}

uint64_t shuffle(unsigned mask, uint64_t bits, int src_lane) {
  Launch& launch = *current;
  const int thread = linear_thread(), lane = thread % 32;
  Warp& warp = launch.block->warps[thread / 32];
  if (!((mask >> lane) & 1u)) {
    failf("__shfl_xor_sync: the calling lane %d is not in the mask 0x%08x", lane, mask);
  }
  warp.slots[lane] = bits;
  warp.deposited.fetch_or(1u << lane);
  const auto close_round = [&warp] { warp.round = warp.deposited.exchange(0); };
  warp.barrier.wait("__shfl_xor_sync", close_round);
  const uint32_t round = warp.round;
  uint64_t value = bits;
  std::string problem;
  if (!((round >> src_lane) & 1u)) {
    problem = format("__shfl_xor_sync: lane %d reads lane %d, which did not take part (exited or "
                     "elsewhere): its value is undefined",
                     lane, src_lane);
  } else if (!((mask >> src_lane) & 1u)) {
    problem = format("__shfl_xor_sync: lane %d reads lane %d, which is not in the mask 0x%08x",
                     lane, src_lane, mask);
  } else {
    value = warp.slots[src_lane];
  }
  warp.barrier.wait("__shfl_xor_sync", [] {});  // before anyone deposits again
  if (!problem.empty()) fail(problem.c_str());
  return value;
}

void launch(const void* kernel, const LaunchConfig& config, const std::function<void()>& thread_body) {
  const std::lock_guard<std::mutex> launch_lock(launch_mutex);
  cudaError_t code;
  const std::string problem = check_config(kernel, config, &code);
  if (!problem.empty()) {
    set_error(code, "invalid launch: " + problem);
    return;
  }
  Launch state;
  state.kernel = kernel;
  state.config = config;
  state.grid = config.grid;
  if (max_blocks_x != 0 && state.grid.x > max_blocks_x) state.grid.x = max_blocks_x;
  current = &state;
  const int threads = static_cast<int>(config.block.x * config.block.y * config.block.z);
  size_t static_shared = 0;
  const std::function<void(int)> job = [&](int index) {
    const dim3 b = state.config.block;
    threadIdx = uint3(index % b.x, (index / b.x) % b.y, index / (b.x * b.y));
    blockIdx = state.block_index;
    blockDim = b;
    gridDim = state.grid;
    try {
      thread_body();
    } catch (const Fault& fault) {
      if (fault.message != "stopped") record_failure(fault);
    } catch (const std::exception& e) {
      record_failure(Fault{cudaErrorLaunchFailure, std::string("C++ exception: ") + e.what()});
    }
    // The thread returns: it leaves the block's barrier and its warp's.
    Block& block = *state.block;
    block.barrier.drop([] {});
    Warp& warp = block.warps[index / 32];
    warp.barrier.drop([&warp] { warp.round = warp.deposited.exchange(0); });
  };
  for (unsigned z = 0; z < state.grid.z && !state.stop; ++z) {
    for (unsigned y = 0; y < state.grid.y && !state.stop; ++y) {
      for (unsigned x = 0; x < state.grid.x && !state.stop; ++x) {
        Block block(threads);
        block.dynamic_bytes = config.shared_bytes;
        block.dynamic = poisoned_allocation(config.shared_bytes);
        state.block_index = uint3(x, y, z);
        state.block = &block;
        pool().run(threads, job);
        static_shared = std::max(static_shared, block.static_bytes);
        state.block = nullptr;
      }
    }
  }
  current = nullptr;
  {
    const std::lock_guard<std::mutex> lock(kernels_mutex);
    KernelRecord& record = kernels[kernel];
    if (!state.name.empty()) record.name = state.name;
    if (state.max_threads > 0) record.max_threads = state.max_threads;
    record.static_shared = std::max(record.static_shared, static_shared);
  }
  {
    const std::lock_guard<std::mutex> lock(log_mutex);
    launch_log += format("{\"kernel\": \"%s\", \"grid\": [%u, %u, %u], \"blocks_run\": [%u, %u, %u], "
                         "\"block\": [%u, %u, %u], \"dynamic_shared\": %zu, \"static_shared\": %zu, "
                         "\"failed\": %s}\n",
                         state.name.c_str(), config.grid.x, config.grid.y, config.grid.z,
                         state.grid.x, state.grid.y, state.grid.z, config.block.x, config.block.y,
                         config.block.z, config.shared_bytes, static_shared,
                         state.failed ? "true" : "false");
  }
  if (state.failed) set_error(state.code, state.failure);
}

cudaError_t func_get_attributes(cudaFuncAttributes* attributes, const void* kernel) {
  const std::lock_guard<std::mutex> lock(kernels_mutex);
  const KernelRecord& record = kernels[kernel];
  *attributes = cudaFuncAttributes{};
  attributes->sharedSizeBytes = record.static_shared;
  attributes->maxThreadsPerBlock = record.max_threads;
  attributes->maxDynamicSharedSizeBytes = record.max_dynamic_shared;
  attributes->ptxVersion = 90;
  attributes->binaryVersion = 90;
  return cudaSuccess;
}

cudaError_t func_set_attribute(const void* kernel, cudaFuncAttribute attr, int value) {
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize) return cudaSuccess;
  const std::lock_guard<std::mutex> lock(kernels_mutex);
  KernelRecord& record = kernels[kernel];
  const size_t room = optin_shared() - std::min(optin_shared(), record.static_shared);
  if (value < 0 || static_cast<size_t>(value) > room) {
    return set_error(cudaErrorInvalidValue,
                     format("cudaFuncSetAttribute: %d bytes of dynamic shared memory exceed the "
                            "%zu the device allows beside the kernel's %zu static bytes",
                            value, room, record.static_shared));
  }
  record.max_dynamic_shared = value;
  return cudaSuccess;
}

cudaError_t occupancy_max_active_blocks(int* blocks, const void* kernel, int block_size,
                                        size_t dynamic_shared_bytes) {
  size_t static_shared;
  {
    const std::lock_guard<std::mutex> lock(kernels_mutex);
    static_shared = kernels[kernel].static_shared;
  }
  if (block_size <= 0) return set_error(cudaErrorInvalidValue, "occupancy: block size <= 0");
  // By threads, blocks and shared memory (1 KiB reserved per block, as on sm_80 and later);
  // registers are not modelled.
  const int warps = (block_size + 31) / 32;
  int fit = device_attribute(cudaDevAttrMaxThreadsPerMultiProcessor) / (warps * 32);
  fit = std::min(fit, device_attribute(cudaDevAttrMaxBlocksPerMultiprocessor));
  const size_t per_block = static_shared + dynamic_shared_bytes + 1024;
  fit = std::min<int>(fit, static_cast<int>(
                               device_attribute(cudaDevAttrMaxSharedMemoryPerMultiprocessor) / per_block));
  *blocks = std::max(fit, 0);
  return cudaSuccess;
}

}  // namespace cuda_emu

cudaError_t cudaGetLastError() {
  const cudaError_t error = cuda_emu::last_error;
  cuda_emu::last_error = cudaSuccess;
  return error;
}

cudaError_t cudaPeekAtLastError() { return cuda_emu::last_error; }

const char* cudaGetErrorName(cudaError_t error) {
  switch (error) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDeviceFunction: return "cudaErrorInvalidDeviceFunction";
    case cudaErrorIllegalAddress: return "cudaErrorIllegalAddress";
    case cudaErrorLaunchOutOfResources: return "cudaErrorLaunchOutOfResources";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
  }
  return "cudaErrorUnknown";
}

// The account of the last failure when `error` is its code, else the error's name.
const char* cudaGetErrorString(cudaError_t error) {
  thread_local std::string text;
  {
    const std::lock_guard<std::mutex> lock(cuda_emu::message_mutex);
    text = error == cuda_emu::last_message_code && error != cudaSuccess
               ? std::string(cudaGetErrorName(error)) + ": " + cuda_emu::last_message
               : std::string(cudaGetErrorName(error));
  }
  return text.c_str();
}

cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  if (device != 0) return cuda_emu::set_error(cudaErrorInvalidValue, "no such device");
  const int v = cuda_emu::device_attribute(attr);
  if (v < 0) {
    return cuda_emu::set_error(cudaErrorInvalidValue,
                               cuda_emu::format("device attribute %d is not emulated", static_cast<int>(attr)));
  }
  *value = v;
  return cudaSuccess;
}

// Controls for the tests (through ctypes).
extern "C" {

// Sets a device attribute (a cudaDeviceAttr value); returns the previous value.
int cuda_emu_set_device_attribute(int attr, int value) {
  const std::lock_guard<std::mutex> lock(cuda_emu::device_mutex);
  const int previous = cuda_emu::device_attributes[attr];
  cuda_emu::device_attributes[attr] = value;
  return previous;
}

// Caps the blocks a launch runs along x (0: no cap), as if the launcher had asked for that
// many: only for grid-stride kernels, to run their loops on small inputs. Returns the
// previous cap.
unsigned cuda_emu_set_max_blocks(unsigned blocks) {
  const std::lock_guard<std::mutex> lock(cuda_emu::launch_mutex);
  const unsigned previous = cuda_emu::max_blocks_x;
  cuda_emu::max_blocks_x = blocks;
  return previous;
}

// The launches since the last call, one JSON object per line; clears the log.
const char* cuda_emu_take_launch_log() {
  static std::string taken;
  const std::lock_guard<std::mutex> lock(cuda_emu::log_mutex);
  taken.swap(cuda_emu::launch_log);
  cuda_emu::launch_log.clear();
  return taken.c_str();
}

}  // extern "C"
