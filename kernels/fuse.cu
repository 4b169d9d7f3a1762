// Latent fusion, each op one pass over memory:
//   blend_*:         out = w * a + (1 - w) * b, w = the soft band of the mask (below)
//   mean_shift_*:    out = a + (mean_bg(b) - mean_fg(a)) per (n, c) plane
//   temporal_blend_*: out = (1 - w) * cur + w * hist, w = alpha * valid
// a, b, cur, hist take arbitrary strides; mask / valid are contiguous fp32 [N, 1, H, W]; outputs
// are contiguous. Masks are read as clamp(m, 0, 1) (NaN counts as 0). Products and sums use the
// _rn intrinsics so that no FMA contraction separates the kernels from their torch references.
#include "common.cuh"

#define BLEND_BX 32
#define BLEND_BY 8

// Soft band of radius R (pixels of this tensor):
//   w(p) = max over q with |q - p|^2 <= R^2 of m(q) * (1 - |q - p| / (R + 1))
// so w = m for R = 0, w = 1 on the mask, falling linearly to 0 at R + 1 pixels from it. The mask
// tile with an R-pixel apron and the (2R+1)^2 falloff table live in dynamic shared memory;
// a tile with no mask pixel at all skips the window scan (most tiles when an actor is small).
template <typename T>
__device__ __forceinline__ void blend_body(const T* __restrict__ a, i64 an, i64 ac, i64 ah, i64 aw,
                                           const T* __restrict__ b, i64 bn, i64 bc, i64 bh, i64 bw,
                                           const float* __restrict__ mask, T* __restrict__ out,
                                           int N, int C, int H, int W, int R) {
  extern __shared__ float smem[];
  int n = blockIdx.z;
  int x = blockIdx.x * BLEND_BX + threadIdx.x, y = blockIdx.y * BLEND_BY + threadIdx.y;
  i64 plane = (i64)H * W;
  const float* m = mask + (i64)n * plane;
  float w = 0.0f;
  if (R == 0) {
    if (x >= W || y >= H) return;
    w = clamp01(m[(i64)y * W + x]);
  } else {
    int tw = BLEND_BX + 2 * R, th = BLEND_BY + 2 * R, side = 2 * R + 1;
    float* tile = smem;
    float* fall = smem + tw * th;
    int tid = threadIdx.y * BLEND_BX + threadIdx.x;
    int x0 = blockIdx.x * BLEND_BX - R, y0 = blockIdx.y * BLEND_BY - R;
    bool any = false;
    for (int i = tid; i < tw * th; i += BLEND_BX * BLEND_BY) {
      int yy = y0 + i / tw, xx = x0 + i % tw;
      float v = (xx >= 0 && xx < W && yy >= 0 && yy < H) ? clamp01(m[(i64)yy * W + xx]) : 0.0f;
      tile[i] = v;
      any = any || v > 0.0f;
    }
    for (int i = tid; i < side * side; i += BLEND_BX * BLEND_BY) {
      int dy = i / side - R, dx = i % side - R;
      int d2 = dx * dx + dy * dy;
      fall[i] = d2 <= R * R ? __fsub_rn(1.0f, __fdiv_rn(sqrtf((float)d2), (float)(R + 1))) : 0.0f;
    }
    if (!__syncthreads_or(any)) {
      w = 0.0f;
    } else {
      for (int dy = 0; dy < side; ++dy) {
        const float* row = tile + (threadIdx.y + dy) * tw + threadIdx.x;
        for (int dx = 0; dx < side; ++dx) w = fmaxf(w, __fmul_rn(row[dx], fall[dy * side + dx]));
      }
    }
    if (x >= W || y >= H) return;
  }
  float v = __fsub_rn(1.0f, w);
  const T* pa = a + (i64)n * an + (i64)y * ah + (i64)x * aw;
  const T* pb = b + (i64)n * bn + (i64)y * bh + (i64)x * bw;
  T* o = out + (i64)n * C * plane + (i64)y * W + x;
  for (int c = 0; c < C; ++c)
    o[(i64)c * plane] = from_f32<T>(__fadd_rn(__fmul_rn(w, to_f32(pa[(i64)c * ac])), __fmul_rn(v, to_f32(pb[(i64)c * bc]))));
}

// One block per (c, n) plane: reduce, then shift the plane (its second read hits L1/L2).
// mean_fg(a) = sum(m a) / sum(m), mean_bg(b) = sum((1 - m) b) / sum(1 - m), summed in fp64;
// the shift is 0 when either region is empty.
#define SHIFT_THREADS 1024  // latents: 80 planes of ~9k elements; many loads in flight per SM
template <typename T>
__device__ __forceinline__ void mean_shift_body(const T* __restrict__ a, i64 an, i64 ac, i64 ah, i64 aw,
                                                const T* __restrict__ b, i64 bn, i64 bc, i64 bh, i64 bw,
                                                const float* __restrict__ mask, T* __restrict__ out,
                                                int N, int C, int H, int W) {
  __shared__ double partial[SHIFT_THREADS / 32][4];
  __shared__ float shift;
  int c = blockIdx.x, n = blockIdx.y;
  i64 plane = (i64)H * W;
  const T* pa = a + (i64)n * an + (i64)c * ac;
  const T* pb = b + (i64)n * bn + (i64)c * bc;
  const float* m = mask + (i64)n * plane;
  double s[4] = {0.0, 0.0, 0.0, 0.0};  // sum(m a), sum(m), sum((1-m) b), sum(1-m)
  for (i64 p = threadIdx.x; p < plane; p += SHIFT_THREADS) {
    int y = (int)(p / W), x = (int)(p - (i64)y * W);
    double mv = (double)clamp01(m[p]);
    s[0] += mv * (double)to_f32(pa[(i64)y * ah + (i64)x * aw]);
    s[1] += mv;
    s[2] += (1.0 - mv) * (double)to_f32(pb[(i64)y * bh + (i64)x * bw]);
    s[3] += 1.0 - mv;
  }
  for (int k = 0; k < 4; ++k)
    for (int o = 16; o > 0; o >>= 1) s[k] += __shfl_down_sync(0xffffffffu, s[k], o);
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0)
    for (int k = 0; k < 4; ++k) partial[warp][k] = s[k];
  __syncthreads();
  if (threadIdx.x == 0) {
    double t[4] = {0.0, 0.0, 0.0, 0.0};
    for (int w = 0; w < SHIFT_THREADS / 32; ++w)
      for (int k = 0; k < 4; ++k) t[k] += partial[w][k];
    shift = (t[1] > 0.0 && t[3] > 0.0) ? (float)(t[2] / t[3] - t[0] / t[1]) : 0.0f;
  }
  __syncthreads();
  float sv = shift;
  T* o = out + ((i64)n * C + c) * plane;
  for (i64 p = threadIdx.x; p < plane; p += SHIFT_THREADS) {
    int y = (int)(p / W), x = (int)(p - (i64)y * W);
    o[p] = from_f32<T>(__fadd_rn(to_f32(pa[(i64)y * ah + (i64)x * aw]), sv));
  }
}

template <typename T>
__device__ __forceinline__ void temporal_blend_body(const T* __restrict__ cur, i64 cn, i64 cc, i64 ch, i64 cw,
                                                    const T* __restrict__ hist, i64 hn, i64 hc, i64 hh, i64 hw,
                                                    const float* __restrict__ valid, float alpha,
                                                    T* __restrict__ out, int N, int C, int H, int W) {
  PixelIndex q;
  if (!thread_pixel(N, H, W, q)) return;
  const i64 plane = q.plane, idx = q.idx, p = q.p;
  const int n = q.n, y = q.y, x = q.x;
  float w = __fmul_rn(alpha, clamp01(valid[idx])), v = __fsub_rn(1.0f, w);
  const T* pc = cur + (i64)n * cn + (i64)y * ch + (i64)x * cw;
  const T* ph = hist + (i64)n * hn + (i64)y * hh + (i64)x * hw;
  T* o = out + (i64)n * C * plane + p;
  for (int c = 0; c < C; ++c)
    o[(i64)c * plane] = from_f32<T>(__fadd_rn(__fmul_rn(v, to_f32(pc[(i64)c * cc])), __fmul_rn(w, to_f32(ph[(i64)c * hc]))));
}

#define SIMHARMON_FUSE(T, NAME)                                                                        \
  extern "C" __global__ void __launch_bounds__(BLEND_BX * BLEND_BY) blend_##NAME(                     \
      const T* __restrict__ a, i64 an, i64 ac, i64 ah, i64 aw, const T* __restrict__ b, i64 bn, i64 bc, \
      i64 bh, i64 bw, const float* __restrict__ mask, T* __restrict__ out, int N, int C, int H, int W, int R) { \
    blend_body<T>(a, an, ac, ah, aw, b, bn, bc, bh, bw, mask, out, N, C, H, W, R);                    \
  }                                                                                                   \
  extern "C" __global__ void __launch_bounds__(SHIFT_THREADS) mean_shift_##NAME(                      \
      const T* __restrict__ a, i64 an, i64 ac, i64 ah, i64 aw, const T* __restrict__ b, i64 bn, i64 bc, \
      i64 bh, i64 bw, const float* __restrict__ mask, T* __restrict__ out, int N, int C, int H, int W) { \
    mean_shift_body<T>(a, an, ac, ah, aw, b, bn, bc, bh, bw, mask, out, N, C, H, W);                  \
  }                                                                                                   \
  extern "C" __global__ void __launch_bounds__(256) temporal_blend_##NAME(                            \
      const T* __restrict__ cur, i64 cn, i64 cc, i64 ch, i64 cw, const T* __restrict__ hist, i64 hn,   \
      i64 hc, i64 hh, i64 hw, const float* __restrict__ valid, float alpha, T* __restrict__ out, int N, \
      int C, int H, int W) {                                                                          \
    temporal_blend_body<T>(cur, cn, cc, ch, cw, hist, hn, hc, hh, hw, valid, alpha, out, N, C, H, W); \
  }
SIMHARMON_FOR_EACH_FLOAT(SIMHARMON_FUSE)
