// Shared device helpers for the simharmon kernels.
//
// Deliberately free of CUDA headers (no cuda_fp16.h / cuda_bf16.h): the same text compiles under
// nvcc (the CI check), under NVRTC through cupy's RawModule, where include paths are not set up,
// and as host C++ against kernels/host/cuda_host.hpp (CI runs every kernel on the CPU that way).
// The only host-specific code is under #ifndef __CUDA_ARCH__, beside the inline PTX it replaces.
// Every kernel computes in fp32; fp16/bf16 are storage types only.
#pragma once

typedef long long i64;

// Storage types for 16-bit floats: raw bits, converted explicitly.
struct f16 { unsigned short bits; };
struct bf16 { unsigned short bits; };

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(f16 x) {
#ifdef __CUDA_ARCH__
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(x.bits));
  return f;
#else  // host build (kernels/host): exact widening; NaN -> the canonical NaN
  unsigned int h = x.bits, sign = (h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  if (e == 0x1fu) return __uint_as_float(m ? 0x7fffffffu : sign | 0x7f800000u);
  if (e == 0u) {
    if (m == 0u) return __uint_as_float(sign);
    e = 1u;  // subnormal: m * 2^-24, normalized below
    while (!(m & 0x400u)) { m <<= 1; e -= 1u; }
    m &= 0x3ffu;
  }
  return __uint_as_float(sign | ((e + 112u) << 23) | (m << 13));
#endif
}
__device__ __forceinline__ float to_f32(bf16 x) { return __uint_as_float(((unsigned int)x.bits) << 16); }

template <typename T> __device__ __forceinline__ T from_f32(float x);
template <> __device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <> __device__ __forceinline__ f16 from_f32<f16>(float x) {
  f16 r;
#ifdef __CUDA_ARCH__
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(r.bits) : "f"(x));
#else  // host build: round to nearest even as cvt.rn does; NaN -> the canonical 0x7fff
  unsigned int u = __float_as_uint(x), sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu, q, rest, half;
  if (a > 0x7f800000u) {
    q = 0x7fffu;
    sign = 0u;
  } else if (a >= 0x477ff000u) {  // >= 65520, the midpoint above the largest half: rounds to infinity
    q = 0x7c00u;
  } else if (a >= 0x38800000u) {  // normal half: rebias the exponent, keep 10 mantissa bits
    a -= 0x38000000u;
    q = a >> 13;
    rest = a & 0x1fffu;
    half = 0x1000u;
    q += rest > half || (rest == half && (q & 1u));  // a carry into the exponent is still right
  } else if (a > 0x33000000u) {  // subnormal half: units of 2^-24
    unsigned int shift = 126u - (a >> 23), m = (a & 0x7fffffu) | 0x800000u;
    q = m >> shift;
    rest = m & ((1u << shift) - 1u);
    half = 1u << (shift - 1u);
    q += rest > half || (rest == half && (q & 1u));
  } else {  // <= 2^-25: rounds to zero (2^-25 itself ties to the even 0)
    q = 0u;
  }
  r.bits = (unsigned short)(sign | q);
#endif
  return r;
}
template <> __device__ __forceinline__ bf16 from_f32<bf16>(float x) {
  // Round to nearest even, as torch's float -> bfloat16 cast does; NaN stays a quiet NaN.
  unsigned int u = __float_as_uint(x);
  bf16 r;
  if ((u & 0x7fffffffu) > 0x7f800000u) {
    r.bits = (unsigned short)((u >> 16) | 0x0040u);
  } else {
    u += 0x7fffu + ((u >> 16) & 1u);
    r.bits = (unsigned short)(u >> 16);
  }
  return r;
}

// One thread per pixel of an [N, *, H, W] launch: the thread's flat pixel index, its image n and
// position (y, x), and the offset p inside the image plane. False for threads past the end.
struct PixelIndex {
  i64 plane, idx, p;
  int n, y, x;
};

__device__ __forceinline__ bool thread_pixel(int N, int H, int W, PixelIndex& q) {
  q.plane = (i64)H * W;
  q.idx = (i64)blockIdx.x * blockDim.x + threadIdx.x;
  if (q.idx >= (i64)N * q.plane) return false;
  q.n = (int)(q.idx / q.plane);
  q.p = q.idx - (i64)q.n * q.plane;
  q.y = (int)(q.p / W);
  q.x = (int)(q.p - (i64)q.y * W);
  return true;
}

__device__ __forceinline__ float clamp01(float x) { return fminf(fmaxf(x, 0.0f), 1.0f); }

// One bilinear lookup: the four taps around (sx, sy), their weights, and which are inside.
//
// Pixel centres sit at integer coordinates (grid_sample's align_corners=True, in pixels). With
// zero padding a tap outside the image contributes nothing; with border padding the position is
// clamped into [0, W-1] x [0, H-1] first, so every tap is inside. `inside` is the summed weight of
// the in-bounds taps at the UNCLAMPED position, for both paddings: 1 well inside, falling to 0 over
// the last pixel outside, 0 for a non-finite position.
struct Bilinear {
  i64 off[4];   // tap offsets (y * stride_h + x * stride_w), valid only where use[k]
  float w[4];
  bool use[4];
  float inside;
};

__device__ __forceinline__ void bilinear_weights(float sx, float sy, int x0, int y0, float* w) {
  float fx = sx - (float)x0, fy = sy - (float)y0;
  float gx = 1.0f - fx, gy = 1.0f - fy;
  w[0] = __fmul_rn(gx, gy);
  w[1] = __fmul_rn(fx, gy);
  w[2] = __fmul_rn(gx, fy);
  w[3] = __fmul_rn(fx, fy);
}

// Summed weight of the taps inside the image at an unclamped position (0 if none or non-finite).
__device__ __forceinline__ float inside_weight(float sx, float sy, int H, int W) {
  // The negated comparisons also reject NaN; the range test keeps floorf's result within int.
  if (!(sx > -1.0f && sx < (float)W && sy > -1.0f && sy < (float)H)) return 0.0f;
  int x0 = (int)floorf(sx), y0 = (int)floorf(sy);
  float w[4];
  bilinear_weights(sx, sy, x0, y0, w);
  bool in_x0 = x0 >= 0, in_x1 = x0 + 1 <= W - 1, in_y0 = y0 >= 0, in_y1 = y0 + 1 <= H - 1;
  float s = 0.0f;
  if (in_x0 && in_y0) s = __fadd_rn(s, w[0]);
  if (in_x1 && in_y0) s = __fadd_rn(s, w[1]);
  if (in_x0 && in_y1) s = __fadd_rn(s, w[2]);
  if (in_x1 && in_y1) s = __fadd_rn(s, w[3]);
  return s;
}

__device__ __forceinline__ Bilinear bilinear_setup(float sx, float sy, int H, int W, i64 sh, i64 sw, bool border) {
  Bilinear b;
  b.inside = inside_weight(sx, sy, H, W);
  for (int k = 0; k < 4; ++k) { b.off[k] = 0; b.w[k] = 0.0f; b.use[k] = false; }
  bool finite = isfinite(sx) && isfinite(sy);
  if (!finite) return b;
  if (border) {
    sx = fminf(fmaxf(sx, 0.0f), (float)(W - 1));
    sy = fminf(fmaxf(sy, 0.0f), (float)(H - 1));
  } else if (!(sx > -1.0f && sx < (float)W && sy > -1.0f && sy < (float)H)) {
    return b;  // no tap inside (and no floorf of a huge value)
  }
  int x0 = (int)floorf(sx), y0 = (int)floorf(sy);
  bilinear_weights(sx, sy, x0, y0, b.w);
  int xs[2] = {x0, x0 + 1}, ys[2] = {y0, y0 + 1};
  for (int k = 0; k < 4; ++k) {
    int x = xs[k & 1], y = ys[k >> 1];
    if (border) { x = min(x, W - 1); y = min(y, H - 1); }
    b.use[k] = x >= 0 && x < W && y >= 0 && y < H;
    b.off[k] = b.use[k] ? (i64)y * sh + (i64)x * sw : 0;
  }
  return b;
}

// Weighted sum of the in-bounds taps, accumulated in tap order without FMA contraction
// (the torch reference does the same products and sums, so fp32 results agree to the bit).
template <typename T>
__device__ __forceinline__ float bilinear_sample(const T* __restrict__ plane, const Bilinear& b) {
  float v = 0.0f;
  for (int k = 0; k < 4; ++k)
    if (b.use[k]) v = __fadd_rn(v, __fmul_rn(b.w[k], to_f32(plane[b.off[k]])));
  return v;
}

// Instantiate a kernel template once per storage type under C names: NAME_f32, NAME_f16, NAME_bf16.
#define SIMHARMON_FOR_EACH_FLOAT(MACRO) MACRO(float, f32) MACRO(f16, f16) MACRO(bf16, bf16)
