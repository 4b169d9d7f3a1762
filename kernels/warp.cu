// Bilinear backward warp: out[n, c, y, x] = src[n, c, y + flow_y, x + flow_x], flow in pixels.
//
// One thread per output pixel: the tap positions and weights are computed once and reused for
// every channel. Source strides are arbitrary (no hidden copy of a non-contiguous input); flow,
// out and valid are contiguous. See common.cuh for the sampling convention and `valid`.
#include "common.cuh"

template <typename T>
__device__ __forceinline__ void warp_body(const T* __restrict__ src, i64 sn, i64 sc, i64 sh, i64 sw,
                                          const float* __restrict__ flow, T* __restrict__ out,
                                          float* __restrict__ valid, int N, int C, int H, int W, int border) {
  PixelIndex q;
  if (!thread_pixel(N, H, W, q)) return;
  const i64 plane = q.plane, idx = q.idx, p = q.p;
  const int n = q.n, y = q.y, x = q.x;

  const float* f = flow + (i64)n * 2 * plane + p;
  float sx = __fadd_rn((float)x, f[0]), sy = __fadd_rn((float)y, f[plane]);
  Bilinear b = bilinear_setup(sx, sy, H, W, sh, sw, border != 0);
  valid[idx] = b.inside;

  const T* s = src + (i64)n * sn;
  T* o = out + (i64)n * C * plane + p;
  for (int c = 0; c < C; ++c) o[(i64)c * plane] = from_f32<T>(bilinear_sample(s + (i64)c * sc, b));
}

#define SIMHARMON_WARP(T, NAME)                                                                        \
  extern "C" __global__ void __launch_bounds__(256) warp_##NAME(                                      \
      const T* __restrict__ src, i64 sn, i64 sc, i64 sh, i64 sw, const float* __restrict__ flow,      \
      T* __restrict__ out, float* __restrict__ valid, int N, int C, int H, int W, int border) {       \
    warp_body<T>(src, sn, sc, sh, sw, flow, out, valid, N, C, H, W, border);                          \
  }
SIMHARMON_FOR_EACH_FLOAT(SIMHARMON_WARP)
