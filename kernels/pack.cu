// The runtime boundary: 8-bit interleaved frames <-> planar model tensors in [-1, 1].
//
// pack:   src uint8 [N, H, W, Cin] (any strides), channels (ch0, ch1, ch2) taken as R, G, B;
//         out[n, k, y, x] = (u / 255 - 0.5) / 0.5, each step an IEEE fp32 operation, then cast:
//         bit-identical to the release's ToTensor + Normalize(0.5, 0.5) evaluated on the CPU.
// unpack: src [N, 3, H, W] (any strides) in model space -> out uint8 [N, H, W, Cout] contiguous;
//         f = clamp(v * 0.5 + 0.5, 0, 1) (NaN -> 0), q = f * 255, then truncation (the release's
//         ToPILImage) or round-half-even; R, G, B go to positions (pos0, pos1, pos2), alpha = 255
//         at alpha_pos when >= 0.
#include "common.cuh"

__device__ __forceinline__ float level_to_model(unsigned int u) {
  return __fdiv_rn(__fsub_rn(__fdiv_rn((float)u, 255.0f), 0.5f), 0.5f);
}

template <typename T>
__device__ __forceinline__ void pack_body(const unsigned char* __restrict__ src, i64 sn, i64 sh, i64 sw, i64 sc,
                                          int ch0, int ch1, int ch2, int word_loads, T* __restrict__ out,
                                          int N, int H, int W) {
  PixelIndex q;
  if (!thread_pixel(N, H, W, q)) return;
  const i64 plane = q.plane, p = q.p;
  const int n = q.n, y = q.y, x = q.x;
  const unsigned char* px = src + (i64)n * sn + (i64)y * sh + (i64)x * sw;
  unsigned int u0, u1, u2;
  if (word_loads) {  // 4 contiguous, 4-byte aligned channels per pixel: one 32-bit load
    unsigned int word = *reinterpret_cast<const unsigned int*>(px);
    u0 = (word >> (8 * ch0)) & 0xffu;
    u1 = (word >> (8 * ch1)) & 0xffu;
    u2 = (word >> (8 * ch2)) & 0xffu;
  } else {
    u0 = px[(i64)ch0 * sc];
    u1 = px[(i64)ch1 * sc];
    u2 = px[(i64)ch2 * sc];
  }
  T* o = out + (i64)n * 3 * plane + p;
  o[0] = from_f32<T>(level_to_model(u0));
  o[plane] = from_f32<T>(level_to_model(u1));
  o[2 * plane] = from_f32<T>(level_to_model(u2));
}

__device__ __forceinline__ unsigned int model_to_level(float v, int round_nearest) {
  float q = __fmul_rn(clamp01(__fadd_rn(__fmul_rn(v, 0.5f), 0.5f)), 255.0f);
  return round_nearest ? (unsigned int)rintf(q) : (unsigned int)q;
}

template <typename T>
__device__ __forceinline__ void unpack_body(const T* __restrict__ src, i64 sn, i64 sc, i64 sh, i64 sw,
                                            unsigned char* __restrict__ out, int cout, int pos0, int pos1,
                                            int pos2, int alpha_pos, int round_nearest, int N, int H, int W) {
  PixelIndex q;
  if (!thread_pixel(N, H, W, q)) return;
  const i64 idx = q.idx;
  const int n = q.n, y = q.y, x = q.x;
  const T* s = src + (i64)n * sn + (i64)y * sh + (i64)x * sw;
  unsigned int r = model_to_level(to_f32(s[0]), round_nearest);
  unsigned int g = model_to_level(to_f32(s[sc]), round_nearest);
  unsigned int b = model_to_level(to_f32(s[2 * sc]), round_nearest);
  unsigned char* o = out + idx * cout;
  if (cout == 4) {  // one 32-bit store; the output is freshly allocated, so aligned
    unsigned int word = (r << (8 * pos0)) | (g << (8 * pos1)) | (b << (8 * pos2));
    if (alpha_pos >= 0) word |= 255u << (8 * alpha_pos);
    *reinterpret_cast<unsigned int*>(o) = word;
  } else {
    o[pos0] = (unsigned char)r;
    o[pos1] = (unsigned char)g;
    o[pos2] = (unsigned char)b;
  }
}

#define SIMHARMON_PACK(T, NAME)                                                                        \
  extern "C" __global__ void __launch_bounds__(256) pack_##NAME(                                      \
      const unsigned char* __restrict__ src, i64 sn, i64 sh, i64 sw, i64 sc, int ch0, int ch1, int ch2, \
      int word_loads, T* __restrict__ out, int N, int H, int W) {                                     \
    pack_body<T>(src, sn, sh, sw, sc, ch0, ch1, ch2, word_loads, out, N, H, W);                       \
  }                                                                                                   \
  extern "C" __global__ void __launch_bounds__(256) unpack_##NAME(                                    \
      const T* __restrict__ src, i64 sn, i64 sc, i64 sh, i64 sw, unsigned char* __restrict__ out,     \
      int cout, int pos0, int pos1, int pos2, int alpha_pos, int round_nearest, int N, int H, int W) { \
    unpack_body<T>(src, sn, sc, sh, sw, out, cout, pos0, pos1, pos2, alpha_pos, round_nearest, N, H, W); \
  }
SIMHARMON_FOR_EACH_FLOAT(SIMHARMON_PACK)
