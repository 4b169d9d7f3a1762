// Depth reprojection: where each current pixel lands in the previous view.
//
// Per batch item, coef holds the 3x3 matrix M = K_prev R K_cur^-1 (row-major) and the vector
// t' = K_prev t, so that a current pixel (x, y) with depth d lands at p = d * M [x, y, 1] + t'
// (homogeneous; p.z is the point's depth in the previous camera). Folding the intrinsics into M is
// done once per frame on the host side, in float64, so each pixel costs 9 multiply-adds and a divide.
//
// valid = (in-bounds bilinear weight at the landing point) * (occlusion test), 0 where d or p.z is
// not finite and positive. The occlusion test samples prev_depth bilinearly (zero padding,
// renormalized by the in-bounds weight) and passes when |p.z - d_prev| <= rel_tol * d_prev.
#include "common.cuh"

struct Landing {
  float sx, sy;  // landing position in the previous view (pixels)
  float pz;      // the point's depth in the previous camera
  bool ok;       // d and p.z finite and positive
};

__device__ __forceinline__ Landing land(const float* __restrict__ coef, float d, int x, int y) {
  Landing l;
  l.sx = (float)x;
  l.sy = (float)y;
  l.pz = 0.0f;
  l.ok = false;
  if (!(d > 0.0f) || !isfinite(d)) return l;
  float u = (float)x, v = (float)y, r[3];
  for (int i = 0; i < 3; ++i)
    r[i] = __fadd_rn(__fadd_rn(__fmul_rn(coef[3 * i], u), __fmul_rn(coef[3 * i + 1], v)), coef[3 * i + 2]);
  float px = __fadd_rn(__fmul_rn(d, r[0]), coef[9]);
  float py = __fadd_rn(__fmul_rn(d, r[1]), coef[10]);
  float pz = __fadd_rn(__fmul_rn(d, r[2]), coef[11]);
  if (!(pz > 0.0f) || !isfinite(pz)) return l;
  l.pz = pz;
  l.sx = __fdiv_rn(px, pz);
  l.sy = __fdiv_rn(py, pz);
  l.ok = isfinite(l.sx) && isfinite(l.sy);
  if (!l.ok) { l.sx = (float)x; l.sy = (float)y; }
  return l;
}

// Validity of one landing (see the file comment). prev_depth may be null: no occlusion test.
__device__ __forceinline__ float landing_validity(const Landing& l, const float* __restrict__ prev_depth,
                                                  float rel_tol, int H, int W) {
  if (!l.ok) return 0.0f;
  Bilinear b = bilinear_setup(l.sx, l.sy, H, W, (i64)W, 1, false);
  if (b.inside == 0.0f || prev_depth == nullptr) return b.inside;
  float dp = __fdiv_rn(bilinear_sample(prev_depth, b), b.inside);
  bool pass = dp > 0.0f && isfinite(dp) && fabsf(__fsub_rn(l.pz, dp)) <= __fmul_rn(rel_tol, dp);
  return pass ? b.inside : 0.0f;
}

// flow[n] = landing - (x, y) ([N, 2, H, W]), valid [N, 1, H, W]. depth, prev_depth: [N, 1, H, W].
extern "C" __global__ void __launch_bounds__(256)
reproject_flow(const float* __restrict__ depth, const float* __restrict__ coef, const float* __restrict__ prev_depth,
               float rel_tol, float* __restrict__ flow, float* __restrict__ valid, int N, int H, int W) {
  PixelIndex q;
  if (!thread_pixel(N, H, W, q)) return;
  const i64 plane = q.plane, idx = q.idx, p = q.p;
  const int n = q.n, y = q.y, x = q.x;
  Landing l = land(coef + 12 * n, depth[idx], x, y);
  const float* pd = prev_depth ? prev_depth + (i64)n * plane : nullptr;
  valid[idx] = landing_validity(l, pd, rel_tol, H, W);
  float* f = flow + (i64)n * 2 * plane + p;
  f[0] = __fsub_rn(l.sx, (float)x);
  f[plane] = __fsub_rn(l.sy, (float)y);
}

// The same landing, sampling src [N, C, H, W] (any strides) there directly: out, valid.
template <typename T>
__device__ __forceinline__ void reproject_warp_body(const T* __restrict__ src, i64 sn, i64 sc, i64 sh, i64 sw,
                                                    const float* __restrict__ depth, const float* __restrict__ coef,
                                                    const float* __restrict__ prev_depth, float rel_tol,
                                                    T* __restrict__ out, float* __restrict__ valid,
                                                    int N, int C, int H, int W, int border) {
  PixelIndex q;
  if (!thread_pixel(N, H, W, q)) return;
  const i64 plane = q.plane, idx = q.idx, p = q.p;
  const int n = q.n, y = q.y, x = q.x;
  Landing l = land(coef + 12 * n, depth[idx], x, y);
  const float* pd = prev_depth ? prev_depth + (i64)n * plane : nullptr;
  valid[idx] = landing_validity(l, pd, rel_tol, H, W);
  Bilinear b = bilinear_setup(l.sx, l.sy, H, W, sh, sw, border != 0);
  const T* s = src + (i64)n * sn;
  T* o = out + (i64)n * C * plane + p;
  for (int c = 0; c < C; ++c) o[(i64)c * plane] = from_f32<T>(bilinear_sample(s + (i64)c * sc, b));
}

#define SIMHARMON_REPROJECT_WARP(T, NAME)                                                               \
  extern "C" __global__ void __launch_bounds__(256) reproject_warp_##NAME(                             \
      const T* __restrict__ src, i64 sn, i64 sc, i64 sh, i64 sw, const float* __restrict__ depth,      \
      const float* __restrict__ coef, const float* __restrict__ prev_depth, float rel_tol,             \
      T* __restrict__ out, float* __restrict__ valid, int N, int C, int H, int W, int border) {         \
    reproject_warp_body<T>(src, sn, sc, sh, sw, depth, coef, prev_depth, rel_tol, out, valid, N, C, H, W, border); \
  }
SIMHARMON_FOR_EACH_FLOAT(SIMHARMON_REPROJECT_WARP)
