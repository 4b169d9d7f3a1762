// Host (CPU) build of the CUDA kernels: the exact text of kernels/*.cu compiles as C++ against
// this header and runs on the CPU, so CI executes every kernel without a GPU.
//
// - __global__ / __device__ become plain host functions; __shared__ becomes thread_local, which
//   is per block here because one OS worker runs one block at a time.
// - A launch covers the whole grid. Each block runs its threads as fibers (ucontext) on one OS
//   worker, at the real block size. A fiber runs until it reaches a barrier (__syncthreads,
//   __syncthreads_or, __syncwarp, a __shfl_*_sync), then the next fiber runs; a barrier opens
//   when every thread it waits for has arrived. The order in which ready fibers run is a launch
//   option (forward, reverse, shuffled): a kernel whose result depends on it has a race.
// - Stricter than the hardware, on purpose: __syncthreads waits for ALL threads of the block (a
//   thread that exits while others wait there is reported, not counted as arrived), a shuffle
//   must name its own lane in the mask and read only from lanes in it, and all lanes of one
//   barrier must pass the same mask. Every violation ends the launch with a message.
// - Dynamic shared memory is poisoned (all bits set: NaN for floats) at the start of each block.
// - fp32 arithmetic intrinsics (__fadd_rn, ...) are the plain IEEE operations; the module is
//   built with -ffp-contract=off, so nothing is fused into an FMA on the host.
//
// Used only by simharmon/ops/_host.py, which generates one translation unit per kernel file:
// this header, the .cu, then SIMHARMON_HOST_EXPORT(name) for each kernel.
#pragma once

#if defined(__CUDACC__) || defined(__CUDA_ARCH__)
#error "cuda_host.hpp is for the host build of the kernels only"
#endif

#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ thread_local
// __restrict__ is a GNU extension that g++ and clang++ accept as is.

struct uint3 {
  unsigned int x, y, z;
};
struct dim3 {
  unsigned int x, y, z;
};

// ----------------------------------------------------------------------------- intrinsics

using std::isfinite;

inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned int __float_as_uint(float x) {
  unsigned int u;
  std::memcpy(&u, &x, sizeof u);
  return u;
}
inline float __uint_as_float(unsigned int u) {
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
}

// ----------------------------------------------------------------------------- the block runtime

// Internal linkage (and -fvisibility=hidden): every kernel file is its own library with its own
// runtime state; nothing may be unified with another loaded library's (GNU unique symbols).
namespace simharmon_host {
namespace {

constexpr std::size_t kStackBytes = 64 * 1024;
constexpr std::size_t kDynamicSharedBytes = 48 * 1024;  // the default limit without cudaFuncSetAttribute
constexpr unsigned kWarp = 32;

enum class Order { forward = 0, reverse = 1, shuffled = 2 };
enum class Status { ready, waiting, done };

struct Barrier {
  unsigned expected = 0, arrived = 0;
  unsigned mask = 0;  // warp barriers: the mask every participant must pass
  int any = 0, all = 1, count = 0;
  int result_any = 0, result_all = 0, result_count = 0;
  std::vector<int> waiters;  // fiber indices
};

struct Fiber {
  ucontext_t ctx;
  uint3 tid;
  unsigned linear = 0;
  Status status = Status::ready;
  bool started = false;
  unsigned shuffles = 0;  // shuffles done: selects the exchange buffer
  Barrier* waiting_on = nullptr;
  char* stack = nullptr;
};

struct Block;
inline thread_local Block* tls_block = nullptr;

// Dynamic shared memory of this module (SIMHARMON_HOST_DYNAMIC_SHARED), if it declares any.
inline void* (*dynamic_shared)() = nullptr;

struct Block {
  uint3 idx{0, 0, 0};
  dim3 dim{1, 1, 1}, grid{1, 1, 1};
  unsigned threads = 0;
  std::vector<Fiber> fibers;
  Barrier block_barrier;
  std::vector<Barrier> warp_barriers;
  std::vector<std::uint64_t> slots;  // [warp][2][32] exchange slots of the shuffles
  ucontext_t scheduler;
  int current = -1;
  std::string error;
  std::function<void()>* body = nullptr;

  Fiber& self() { return fibers[current]; }
};

[[noreturn]] inline void fail_here(const std::string& message);

inline std::string where(const Block& b, const Fiber& f) {
  char buf[160];
  std::snprintf(buf, sizeof buf, "block (%u, %u, %u) thread (%u, %u, %u)", b.idx.x, b.idx.y, b.idx.z, f.tid.x,
                f.tid.y, f.tid.z);
  return buf;
}

// Arrive at a barrier with a predicate; returns once every expected thread has arrived.
inline void arrive(Barrier& bar, int predicate) {
  Block& b = *tls_block;
  bar.arrived += 1;
  bar.any |= predicate != 0;
  bar.all &= predicate != 0;
  bar.count += predicate != 0;
  if (bar.arrived == bar.expected) {
    bar.result_any = bar.any;
    bar.result_all = bar.all;
    bar.result_count = bar.count;
    bar.arrived = 0;
    bar.any = 0;
    bar.all = 1;
    bar.count = 0;
    bar.mask = 0;
    for (int i : bar.waiters) {
      b.fibers[i].status = Status::ready;
      b.fibers[i].waiting_on = nullptr;
    }
    bar.waiters.clear();
    return;
  }
  Fiber& f = b.self();
  f.status = Status::waiting;
  f.waiting_on = &bar;
  bar.waiters.push_back(b.current);
  swapcontext(&f.ctx, &b.scheduler);
}

inline Barrier& warp_barrier(unsigned mask) {
  Block& b = *tls_block;
  Fiber& f = b.self();
  unsigned lane = f.linear % kWarp;
  if (!((mask >> lane) & 1u)) {
    char buf[96];
    std::snprintf(buf, sizeof buf, "warp-synchronous call with mask 0x%08x that omits the calling lane %u", mask, lane);
    fail_here(where(b, f) + ": " + buf);
  }
  Barrier& bar = b.warp_barriers[f.linear / kWarp];
  if (bar.arrived == 0) {
    bar.mask = mask;
    bar.expected = static_cast<unsigned>(__builtin_popcount(mask));
  } else if (bar.mask != mask) {
    char buf[128];
    std::snprintf(buf, sizeof buf, "lanes of one warp passed different masks (0x%08x and 0x%08x)", bar.mask, mask);
    fail_here(where(b, f) + ": " + buf);
  }
  return bar;
}

template <typename T>
T shuffle(unsigned mask, T value, unsigned source_of_lane(unsigned lane, int arg), int arg) {
  static_assert(sizeof(T) <= sizeof(std::uint64_t) && std::is_trivially_copyable<T>::value, "shuffle of a wide type");
  Block& b = *tls_block;
  Fiber& f = b.self();
  unsigned warp = f.linear / kWarp, lane = f.linear % kWarp;
  std::uint64_t* slots = &b.slots[(warp * 2 + (f.shuffles & 1u)) * kWarp];
  f.shuffles += 1;
  std::memcpy(&slots[lane], &value, sizeof(T));
  // Two alternating buffers: no lane can write this buffer again before every lane has passed the
  // next shuffle's barrier, i.e. after all have read it.
  arrive(warp_barrier(mask), 1);
  unsigned src = source_of_lane(lane, arg);
  if (src >= kWarp) return value;  // past the end of the warp: the caller's own value
  if (!((mask >> src) & 1u)) {
    char buf[96];
    std::snprintf(buf, sizeof buf, "shuffle reads lane %u, which is not in the mask 0x%08x", src, mask);
    fail_here(where(b, f) + ": " + buf);
  }
  T out;
  std::memcpy(&out, &slots[src], sizeof(T));
  return out;
}

inline void full_width(int width) {
  if (width != static_cast<int>(kWarp)) fail_here(where(*tls_block, tls_block->self()) + ": shuffles narrower than a warp are not emulated");
}

inline unsigned source_down(unsigned lane, int delta) { return lane + static_cast<unsigned>(delta); }
inline unsigned source_up(unsigned lane, int delta) {
  return lane >= static_cast<unsigned>(delta) ? lane - static_cast<unsigned>(delta) : lane;
}
inline unsigned source_xor(unsigned lane, int bits) { return lane ^ static_cast<unsigned>(bits); }
inline unsigned source_idx(unsigned, int lane) { return static_cast<unsigned>(lane) % kWarp; }

// A fatal error inside a fiber: record it and never resume this fiber (the launch ends).
[[noreturn]] inline void fail_here(const std::string& message) {
  Block& b = *tls_block;
  if (b.error.empty()) b.error = message;
  Fiber& f = b.self();
  f.status = Status::waiting;
  swapcontext(&f.ctx, &b.scheduler);
  std::abort();  // unreachable: the scheduler never resumes a failed fiber
}

inline void fiber_entry() {
  Block& b = *tls_block;
  (*b.body)();
  b.self().status = Status::done;
  // returning switches to uc_link, the scheduler
}

// Stacks for up to `count` fibers with a guard page below each (a stack overflow faults).
struct Stacks {
  char* base = nullptr;
  std::size_t slot = 0, count = 0;
  explicit Stacks(std::size_t n) : count(n) {
    std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
    slot = kStackBytes + page;
    void* p = mmap(nullptr, slot * n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) return;
    base = static_cast<char*>(p);
    for (std::size_t i = 0; i < n; ++i) mprotect(base + i * slot, page, PROT_NONE);
  }
  ~Stacks() {
    if (base) munmap(base, slot * count);
  }
  char* stack(std::size_t i) const { return base + i * slot + (slot - kStackBytes); }
};

inline std::string deadlock_message(const Block& b) {
  unsigned done = 0, at_block = 0, at_warp = 0;
  const Fiber* example = nullptr;
  for (const Fiber& f : b.fibers) {
    if (f.status == Status::done) {
      done += 1;
    } else if (f.waiting_on == &b.block_barrier) {
      at_block += 1;
      example = example ? example : &f;
    } else {
      at_warp += 1;
      example = example ? example : &f;
    }
  }
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "block (%u, %u, %u): deadlock: %u threads wait at a block barrier, %u at a warp barrier, %u have "
                "exited (a barrier must be reached by every thread it waits for)",
                b.idx.x, b.idx.y, b.idx.z, at_block, at_warp, done);
  std::string msg = buf;
  if (example) msg += "; e.g. " + where(b, *example);
  return msg;
}

// Run one block to completion; false with b.error set on failure.
inline bool run_block(Block& b, const Stacks& stacks, Order order, std::mt19937& rng) {
  unsigned warps = (b.threads + kWarp - 1) / kWarp;
  b.block_barrier = Barrier();
  b.block_barrier.expected = b.threads;
  b.warp_barriers.assign(warps, Barrier());
  b.slots.assign(static_cast<std::size_t>(warps) * 2 * kWarp, 0);
  b.error.clear();
  std::vector<int> sequence(b.threads);
  for (unsigned i = 0; i < b.threads; ++i) {
    Fiber& f = b.fibers[i];
    f.linear = i;
    f.tid = uint3{i % b.dim.x, (i / b.dim.x) % b.dim.y, i / (b.dim.x * b.dim.y)};
    f.status = Status::ready;
    f.started = false;
    f.shuffles = 0;
    f.waiting_on = nullptr;
    f.stack = stacks.stack(i);
    sequence[i] = order == Order::reverse ? static_cast<int>(b.threads - 1 - i) : static_cast<int>(i);
  }
  if (dynamic_shared) std::memset(dynamic_shared(), 0xff, kDynamicSharedBytes);
  unsigned finished = 0;
  while (finished < b.threads) {
    if (order == Order::shuffled) std::shuffle(sequence.begin(), sequence.end(), rng);
    bool progress = false;
    for (int i : sequence) {
      Fiber& f = b.fibers[i];
      if (f.status != Status::ready) continue;
      if (!f.started) {
        getcontext(&f.ctx);
        f.ctx.uc_stack.ss_sp = f.stack;
        f.ctx.uc_stack.ss_size = kStackBytes;
        f.ctx.uc_link = &b.scheduler;
        makecontext(&f.ctx, fiber_entry, 0);
        f.started = true;
      }
      b.current = i;
      swapcontext(&b.scheduler, &f.ctx);
      b.current = -1;
      if (!b.error.empty()) return false;
      if (f.status == Status::done) finished += 1;
      progress = true;
    }
    if (!progress) {
      b.error = deadlock_message(b);
      return false;
    }
  }
  return true;
}

struct Launch {
  dim3 grid, block;
  std::size_t shared_bytes;
  Order order;
  unsigned workers;
  unsigned seed;
};

// Run every block of the grid on `workers` OS threads; returns an empty string or the first error.
inline std::string run_grid(const Launch& launch, std::function<void()> body) {
  unsigned threads = launch.block.x * launch.block.y * launch.block.z;
  std::uint64_t blocks = static_cast<std::uint64_t>(launch.grid.x) * launch.grid.y * launch.grid.z;
  if (threads == 0 || threads > 1024) return "block size " + std::to_string(threads) + " is outside [1, 1024]";
  if (launch.block.z > 64) return "blockDim.z must be <= 64";
  if (launch.grid.y > 65535 || launch.grid.z > 65535) return "gridDim.y and gridDim.z must be <= 65535";
  if (launch.shared_bytes > kDynamicSharedBytes)
    return "dynamic shared memory of " + std::to_string(launch.shared_bytes) +
           " bytes exceeds the 48 KiB a launch gets without cudaFuncSetAttribute";
  if (launch.shared_bytes > 0 && !dynamic_shared)
    return "dynamic shared memory requested, but the kernel file declares no extern __shared__ array";
  if (blocks == 0) return "";
  std::atomic<std::uint64_t> next{0};
  std::atomic<bool> stop{false};
  std::mutex lock;
  std::string first_error;
  auto worker = [&](unsigned w) {
    Stacks stacks(threads);
    if (!stacks.base) {
      std::lock_guard<std::mutex> guard(lock);
      if (first_error.empty()) first_error = "could not map fiber stacks";
      stop = true;
      return;
    }
    Block b;
    b.dim = launch.block;
    b.grid = launch.grid;
    b.threads = threads;
    b.fibers.resize(threads);
    b.body = &body;
    tls_block = &b;
    std::mt19937 rng(launch.seed + 7919u * w);
    for (std::uint64_t i = next++; i < blocks && !stop; i = next++) {
      b.idx = uint3{static_cast<unsigned>(i % launch.grid.x), static_cast<unsigned>((i / launch.grid.x) % launch.grid.y),
                    static_cast<unsigned>(i / (static_cast<std::uint64_t>(launch.grid.x) * launch.grid.y))};
      if (!run_block(b, stacks, launch.order, rng)) {
        std::lock_guard<std::mutex> guard(lock);
        if (first_error.empty()) first_error = b.error;
        stop = true;
      }
    }
    tls_block = nullptr;
  };
  unsigned n = std::max(1u, std::min<unsigned>(launch.workers, static_cast<unsigned>(std::min<std::uint64_t>(blocks, 64))));
  std::vector<std::thread> pool;
  for (unsigned w = 1; w < n; ++w) pool.emplace_back(worker, w);
  worker(0);
  for (auto& t : pool) t.join();
  return first_error;
}

// ----------------------------------------------------------------------------- typed launches

// Argument kinds as the Python launcher describes them: 'p' pointer, 'i' integer, 'f' float.
template <typename T>
constexpr char kind_of() {
  return std::is_pointer<T>::value ? 'p' : std::is_floating_point<T>::value ? 'f' : 'i';
}

template <typename... A, std::size_t... I>
std::tuple<A...> unpack(void** args, std::index_sequence<I...>) {
  return std::tuple<A...>(*static_cast<const typename std::remove_cv<A>::type*>(args[I])...);
}

inline void copy_message(const std::string& message, char* err, std::size_t errlen) {
  if (errlen == 0) return;
  std::size_t n = std::min(message.size(), errlen - 1);
  std::memcpy(err, message.data(), n);
  err[n] = '\0';
}

// args[i] points to the value of argument i (cuLaunchKernel's convention); kinds / sizes describe
// what the caller passed, and must match the kernel's parameter list exactly.
template <typename... A>
int launch_kernel(void (*kernel)(A...), const char* name, const unsigned* dims, unsigned long shared_bytes,
                  int nargs, void** args, const char* kinds, const unsigned* sizes, int order, int workers,
                  unsigned seed, char* err, unsigned long errlen) {
  constexpr char want_kinds[] = {kind_of<A>()..., '\0'};
  constexpr unsigned want_sizes[] = {static_cast<unsigned>(sizeof(A))..., 0u};
  std::string prefix = std::string(name) + ": ";
  if (nargs != static_cast<int>(sizeof...(A))) {
    copy_message(prefix + "takes " + std::to_string(sizeof...(A)) + " arguments, got " + std::to_string(nargs), err,
                 errlen);
    return 1;
  }
  for (int i = 0; i < nargs; ++i) {
    if (kinds[i] != want_kinds[i] || sizes[i] != want_sizes[i]) {
      copy_message(prefix + "argument " + std::to_string(i) + " must be " + want_kinds[i] + std::to_string(want_sizes[i]) +
                       " (p pointer, i integer, f float; bytes), got " + kinds[i] + std::to_string(sizes[i]),
                   err, errlen);
      return 1;
    }
  }
  std::tuple<A...> values = unpack<A...>(args, std::index_sequence_for<A...>());
  Launch launch{dim3{dims[0], dims[1], dims[2]}, dim3{dims[3], dims[4], dims[5]}, shared_bytes,
                static_cast<Order>(order), static_cast<unsigned>(std::max(workers, 1)), seed};
  std::string error = run_grid(launch, [&] { std::apply(kernel, values); });
  if (!error.empty()) {
    copy_message(prefix + error, err, errlen);
    return 2;
  }
  return 0;
}

}  // namespace
}  // namespace simharmon_host

#define threadIdx (::simharmon_host::tls_block->self().tid)
#define blockIdx (::simharmon_host::tls_block->idx)
#define blockDim (::simharmon_host::tls_block->dim)
#define gridDim (::simharmon_host::tls_block->grid)

inline void __syncthreads() { ::simharmon_host::arrive(::simharmon_host::tls_block->block_barrier, 1); }
inline int __syncthreads_or(int predicate) {
  auto& bar = ::simharmon_host::tls_block->block_barrier;
  ::simharmon_host::arrive(bar, predicate);
  return bar.result_any;
}
inline int __syncthreads_and(int predicate) {
  auto& bar = ::simharmon_host::tls_block->block_barrier;
  ::simharmon_host::arrive(bar, predicate);
  return bar.result_all;
}
inline int __syncthreads_count(int predicate) {
  auto& bar = ::simharmon_host::tls_block->block_barrier;
  ::simharmon_host::arrive(bar, predicate);
  return bar.result_count;
}
inline void __syncwarp(unsigned mask = 0xffffffffu) { ::simharmon_host::arrive(::simharmon_host::warp_barrier(mask), 1); }
template <typename T>
T __shfl_sync(unsigned mask, T value, int lane, int width = 32) {
  ::simharmon_host::full_width(width);
  return ::simharmon_host::shuffle(mask, value, ::simharmon_host::source_idx, lane);
}
template <typename T>
T __shfl_down_sync(unsigned mask, T value, unsigned delta, int width = 32) {
  ::simharmon_host::full_width(width);
  return ::simharmon_host::shuffle(mask, value, ::simharmon_host::source_down, static_cast<int>(delta));
}
template <typename T>
T __shfl_up_sync(unsigned mask, T value, unsigned delta, int width = 32) {
  ::simharmon_host::full_width(width);
  return ::simharmon_host::shuffle(mask, value, ::simharmon_host::source_up, static_cast<int>(delta));
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T value, int lane_mask, int width = 32) {
  ::simharmon_host::full_width(width);
  return ::simharmon_host::shuffle(mask, value, ::simharmon_host::source_xor, lane_mask);
}

// One exported C entry point per kernel: simharmon_launch_<name>.
#define SIMHARMON_HOST_EXPORT(NAME)                                                                          \
  extern "C" __attribute__((visibility("default"))) int simharmon_launch_##NAME(const unsigned* dims, unsigned long shared_bytes, int nargs, void** args, \
                                         const char* kinds, const unsigned* sizes, int order, int workers,       \
                                         unsigned seed, char* err, unsigned long errlen) {                       \
    return ::simharmon_host::launch_kernel(&NAME, #NAME, dims, shared_bytes, nargs, args, kinds, sizes, order,  \
                                           workers, seed, err, errlen);                                          \
  }

// The module's `extern __shared__ TYPE NAME[];` array: 48 KiB per OS worker, i.e. per running block.
#define SIMHARMON_HOST_DYNAMIC_SHARED(TYPE, NAME)                                                 \
  alignas(16) thread_local TYPE NAME[::simharmon_host::kDynamicSharedBytes / sizeof(TYPE)];       \
  namespace {                                                                                     \
  const bool simharmon_dynamic_shared_registered =                                                \
      (::simharmon_host::dynamic_shared = [] { return static_cast<void*>(NAME); }, true);         \
  }
