// Kernels that exercise the host emulation itself (tests/ops/test_host_emulation.py): warp
// shuffles, block votes, dynamic shared memory, the storage conversions of common.cuh, and
// deliberately broken kernels the emulation must reject. Valid CUDA, never launched on a GPU.
#include "common.cuh"

// out[t] for a 64-thread block: the four shuffle kinds over the value t * t of each lane.
extern "C" __global__ void shuffles(int* __restrict__ out) {
  int t = threadIdx.x, v = t * t;
  int down = __shfl_down_sync(0xffffffffu, v, 3);
  int up = __shfl_up_sync(0xffffffffu, v, 5);
  int xr = __shfl_xor_sync(0xffffffffu, v, 9);
  int idx = __shfl_sync(0xffffffffu, v, (t * 7) & 31);
  double sum = (double)v;  // a tree sum of doubles, as fuse.cu's mean_shift does
  for (int o = 16; o > 0; o >>= 1) sum += __shfl_down_sync(0xffffffffu, sum, o);
  int* o = out + 5 * (blockIdx.x * blockDim.x + t);
  o[0] = down;
  o[1] = up;
  o[2] = xr;
  o[3] = idx;
  o[4] = (t & 31) == 0 ? (int)sum : -1;
}

// Block votes over the predicate (t % k == 0), for k = 1 .. blockDim.x + 1: or, and, count.
extern "C" __global__ void votes(int* __restrict__ out, int k) {
  int t = threadIdx.y * blockDim.x + threadIdx.x;
  int p = t % k == 0;
  int any = __syncthreads_or(p);
  int all = __syncthreads_and(p);
  int count = __syncthreads_count(p);
  if (t == 0) {
    out[3 * blockIdx.x] = any;
    out[3 * blockIdx.x + 1] = all;
    out[3 * blockIdx.x + 2] = count;
  }
}

// A block-wide reversal through dynamic shared memory; `sync` = 0 drops the barrier (a race).
extern "C" __global__ void reverse_block(const float* __restrict__ in, float* __restrict__ out, int sync) {
  extern __shared__ float buffer[];
  int t = threadIdx.x, n = blockDim.x, base = blockIdx.x * n;
  buffer[t] = in[base + t];
  if (sync) __syncthreads();
  out[base + t] = buffer[n - 1 - t];
}

// Reads dynamic shared memory that nothing wrote: the emulation poisons it (NaN).
extern "C" __global__ void read_unwritten_shared(float* __restrict__ out) {
  extern __shared__ float buffer[];
  out[threadIdx.x] = buffer[threadIdx.x];
}

// Half of the block leaves before a barrier that the other half waits at.
extern "C" __global__ void divergent_barrier(int* __restrict__ out) {
  if (threadIdx.x % 2) return;
  __syncthreads();
  out[threadIdx.x] = 1;
}

// A shuffle whose mask leaves out lanes that call it.
extern "C" __global__ void bad_mask(int* __restrict__ out) {
  out[threadIdx.x] = __shfl_down_sync(0x0000ffffu, (int)threadIdx.x, 1);
}

// The storage conversions of common.cuh, element by element.
extern "C" __global__ void convert(const float* __restrict__ x, f16* __restrict__ h, bf16* __restrict__ b,
                                   float* __restrict__ back_h, float* __restrict__ back_b, i64 n) {
  i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  h[i] = from_f32<f16>(x[i]);
  b[i] = from_f32<bf16>(x[i]);
  back_h[i] = to_f32(h[i]);
  back_b[i] = to_f32(b[i]);
}

// Every 16-bit pattern widened: out_h[i] = to_f32(f16 bits i), out_b[i] = to_f32(bf16 bits i).
extern "C" __global__ void widen_all(float* __restrict__ out_h, float* __restrict__ out_b) {
  unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= 65536u) return;
  f16 h;
  bf16 b;
  h.bits = (unsigned short)i;
  b.bits = (unsigned short)i;
  out_h[i] = to_f32(h);
  out_b[i] = to_f32(b);
}
