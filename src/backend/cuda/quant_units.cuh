// The GGUF block formats the CUDA backend keeps as blocks (Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K;
// layouts in tensor/quant_blocks.cpp), read 32 values at a time. A unit is 32 quants as signed
// bytes (word i holds values 4i .. 4i + 3, lowest byte first) and one (a, b) pair per 16 values:
// value = a * q - b, a and b formed as quant_blocks.cpp forms its factors, so a unit widened with
// separate multiply and subtract equals the loader's values bit for bit.
// The 4-bit formats also read a raw unit (unit<true>, for the block GEMV's integer products): a
// high nibble left in place, 16 q, saving the shift; raw_scale(j, p) is then 1/16 for the halves
// that hold them. kRawUnsigned: the raw bytes are unsigned, 0-240 (Q4_1, Q4_K); Q4_0's raw bytes
// are signed, 16 (q - 8); false where there is no raw form.
#pragma once

#include <cuda_fp16.h>

#include <cstdint>

#include "tensor/tensor.h"

namespace nanoinfer::cuda::quant {

struct Unit {
  uint32_t q[8];
  float a[2], b[2];
};

// The device layout. A kept tensor is repacked at upload from GGUF's array of blocks into planes,
// one per field of the block (its quants, scales, d ...), each holding that field of every block
// of the tensor in block order: a unit's fields then sit at 16-, 4- or 2-byte aligned offsets of
// their planes, and a warp's lanes (consecutive units) load consecutive 16-byte words, where a
// block of 34, 18 or 210 bytes would leave them 2-byte aligned. Same bytes, same size.
struct Plane {
  int offset, size;  // the field's bytes within a GGUF block
};
struct Planes {
  const uint8_t* p[4];
};

__device__ __forceinline__ uint4 ld16(const uint8_t* p) {
  return __ldg(reinterpret_cast<const uint4*>(p));
}
__device__ __forceinline__ uint32_t ld4(const uint8_t* p) {
  return __ldg(reinterpret_cast<const unsigned*>(p));
}
__device__ __forceinline__ float f16_at(const uint8_t* p) {
  return __half2float(__ushort_as_half(__ldg(reinterpret_cast<const unsigned short*>(p))));
}
// The f16 pair of a word: low half first.
__device__ __forceinline__ float2 f16x2(uint32_t w) {
  return __half22float2(*reinterpret_cast<const __half2*>(&w));
}
__device__ __forceinline__ void words(const uint4& v, uint32_t* w) {
  w[0] = v.x, w[1] = v.y, w[2] = v.z, w[3] = v.w;
}

__device__ __forceinline__ void set_pair(Unit& u, float a, float b) {
  u.a[0] = u.a[1] = a;
  u.b[0] = u.b[1] = b;
}

// Every format: its kType, kValues and kBytes a block, kOffset (some b is nonzero), its planes, and
// unit(planes, i, j): the j-th 32 values of block i.
struct Q8_0 {
  static constexpr DType kType = DType::Q8_0;
  static constexpr int kValues = 32, kBytes = 34, kPlaneCount = 2;
  static constexpr bool kOffset = false;
  static constexpr bool kRaw = false, kRawUnsigned = false;
  static constexpr Plane kPlanes[kPlaneCount] = {{2, 32}, {0, 2}};  // qs, d
  __device__ static Unit unit(const Planes& P, int64_t i, int /*j*/) {
    Unit u;
    words(ld16(P.p[0] + 32 * i), u.q);
    words(ld16(P.p[0] + 32 * i + 16), u.q + 4);
    set_pair(u, f16_at(P.p[1] + 2 * i), 0.0F);
    return u;
  }
};

// Byte j of the nibbles: value j (low) and j + 16 (high); q - 8.
struct Q4_0 {
  static constexpr DType kType = DType::Q4_0;
  static constexpr int kValues = 32, kBytes = 18, kPlaneCount = 2;
  static constexpr bool kOffset = false;
  static constexpr bool kRaw = true, kRawUnsigned = false;
  static constexpr Plane kPlanes[kPlaneCount] = {{2, 16}, {0, 2}};  // qs, d
  __device__ static float raw_scale(int /*j*/, int p) { return p == 0 ? 1.0F : 0.0625F; }
  template <bool kRawUnit = false>
  __device__ static Unit unit(const Planes& P, int64_t i, int /*j*/) {
    uint32_t w[4];
    words(ld16(P.p[0] + 16 * i), w);
    Unit u;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      u.q[k] = __vsub4(w[k] & 0x0F0F0F0FU, 0x08080808U);
      u.q[k + 4] = kRawUnit ? __vsub4(w[k] & 0xF0F0F0F0U, 0x80808080U)  // 16 (q - 8)
                            : __vsub4((w[k] >> 4) & 0x0F0F0F0FU, 0x08080808U);
    }
    set_pair(u, f16_at(P.p[1] + 2 * i), 0.0F);
    return u;
  }
};

// d * q + m: b = -m (x - (-m) is x + m exactly).
struct Q4_1 {
  static constexpr DType kType = DType::Q4_1;
  static constexpr int kValues = 32, kBytes = 20, kPlaneCount = 2;
  static constexpr bool kOffset = true;
  static constexpr bool kRaw = true, kRawUnsigned = true;
  static constexpr Plane kPlanes[kPlaneCount] = {{4, 16}, {0, 4}};  // qs, (d, m)
  __device__ static float raw_scale(int /*j*/, int p) { return p == 0 ? 1.0F : 0.0625F; }
  template <bool kRawUnit = false>
  __device__ static Unit unit(const Planes& P, int64_t i, int /*j*/) {
    uint32_t w[4];
    words(ld16(P.p[0] + 16 * i), w);
    Unit u;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      u.q[k] = w[k] & 0x0F0F0F0FU;
      u.q[k + 4] = kRawUnit ? w[k] & 0xF0F0F0F0U : (w[k] >> 4) & 0x0F0F0F0FU;
    }
    const float2 dm = f16x2(ld4(P.p[1] + 4 * i));
    set_pair(u, dm.x, -dm.y);
    return u;
  }
};

// Byte k (0-11) of three words.
__device__ __forceinline__ int byte_of(const uint32_t* s, int k) {
  const uint32_t w = k < 4 ? s[0] : (k < 8 ? s[1] : s[2]);
  return static_cast<int>((w >> (8 * (k % 4))) & 0xFFU);
}

// Q4_K / Q5_K: sub-block j's six-bit scale and min, and its 32 nibbles (chunk j / 2 of 32 bytes,
// low nibbles for even j); Q5_K's fifth bit of value l is bit j of qh[l].
template <bool kFive>
struct QK45 {
  static constexpr DType kType = kFive ? DType::Q5_K : DType::Q4_K;
  static constexpr int kValues = 256, kBytes = kFive ? 176 : 144, kPlaneCount = kFive ? 4 : 3;
  static constexpr bool kOffset = true;
  // qs, scales, (d, dmin) [, qh]
  static constexpr Plane kPlanes[4] = {
      {kFive ? 48 : 16, 128}, {4, 12}, {0, 4}, {16, kFive ? 32 : 0}};
  static constexpr bool kRaw = !kFive, kRawUnsigned = !kFive;  // (Q5_K's fifth bit: no raw form)
  __device__ static float raw_scale(int j, int /*p*/) { return j % 2 == 0 ? 1.0F : 0.0625F; }
  template <bool kRawUnit = false>
  __device__ static Unit unit(const Planes& P, int64_t i, int j) {
    uint32_t s[3];
    const uint8_t* sp = P.p[1] + 12 * i;
    s[0] = ld4(sp), s[1] = ld4(sp + 4), s[2] = ld4(sp + 8);
    // j < 4: bytes j and j + 4, six bits each; else the low four bits from byte j + 4 and the
    // top two from bytes j - 4 (scale) and j (min). In selects, not a branch: the GEMV's lanes
    // keep one j each, half of them on either side.
    const bool low = j < 4;
    const int a = byte_of(s, low ? j : j + 4), b = byte_of(s, low ? j + 4 : j - 4);
    const int c = byte_of(s, j);
    const int sc = low ? a & 63 : (a & 0xF) | ((b >> 6) << 4);
    const int m = low ? b & 63 : (a >> 4) | ((c >> 6) << 4);
    Unit u;
    const uint8_t* qs = P.p[0] + 128 * i + 32 * (j / 2);
    words(ld16(qs), u.q);
    words(ld16(qs + 16), u.q + 4);
    const int shift = 4 * (j % 2);
    uint32_t h[8] = {};
    if constexpr (kFive) {
      words(ld16(P.p[3] + 32 * i), h);
      words(ld16(P.p[3] + 32 * i + 16), h + 4);
    }
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      if constexpr (kRawUnit && !kFive) {
        u.q[k] &= j % 2 == 0 ? 0x0F0F0F0FU : 0xF0F0F0F0U;  // odd j: 16 q
      } else {
        u.q[k] = (u.q[k] >> shift) & 0x0F0F0F0FU;
        if constexpr (kFive) u.q[k] |= ((h[k] >> j) & 0x01010101U) << 4;
      }
    }
    const float2 dd = f16x2(ld4(P.p[2] + 4 * i));
    set_pair(u, __fmul_rn(dd.x, static_cast<float>(sc)), __fmul_rn(dd.y, static_cast<float>(m)));
    return u;
  }
};
using Q4_K = QK45<false>;
using Q5_K = QK45<true>;

// Half h = j / 4, group g = j % 4: low (g < 2) or high nibbles of 32 of the half's 64 low bytes,
// bits 2g, 2g + 1 of its 32 high bytes; q - 32; one signed scale per 16 values.
struct Q6_K {
  static constexpr DType kType = DType::Q6_K;
  static constexpr int kValues = 256, kBytes = 210, kPlaneCount = 4;
  static constexpr bool kOffset = false;
  static constexpr bool kRaw = false, kRawUnsigned = false;
  static constexpr Plane kPlanes[kPlaneCount] = {{0, 128}, {128, 64}, {192, 16}, {208, 2}};
  __device__ static Unit unit(const Planes& P, int64_t i, int j) {
    const int h = j / 4, g = j % 4;
    const uint8_t* ql = P.p[0] + 128 * i + 64 * h + 32 * (g & 1);
    const uint8_t* qh = P.p[1] + 64 * i + 32 * h;
    uint32_t lo[8], hi[8];
    words(ld16(ql), lo);
    words(ld16(ql + 16), lo + 4);
    words(ld16(qh), hi);
    words(ld16(qh + 16), hi + 4);
    const int shift = g < 2 ? 0 : 4;
    Unit u;
#pragma unroll
    for (int k = 0; k < 8; ++k)
      u.q[k] = __vsub4(((lo[k] >> shift) & 0x0F0F0F0FU) | (((hi[k] >> (2 * g)) & 0x03030303U) << 4),
                       0x20202020U);
    const float d = f16_at(P.p[3] + 2 * i);
    const unsigned short sc2 =
        __ldg(reinterpret_cast<const unsigned short*>(P.p[2] + 16 * i + 8 * h + 2 * g));
#pragma unroll
    for (int p = 0; p < 2; ++p) {
      u.a[p] = __fmul_rn(d, static_cast<float>(static_cast<signed char>(sc2 >> (8 * p))));
      u.b[p] = 0.0F;
    }
    return u;
  }
};

// Quant e (0-31) of a unit as a float, without a conversion instruction (a quarter-rate one):
// q + 128 as the low byte of 2^23's float, minus 2^23 + 128.
__device__ __forceinline__ float quant(const Unit& u, int e) {
  const uint32_t biased = u.q[e / 4] ^ 0x80808080U;
  return __int_as_float(static_cast<int>(__byte_perm(biased, 0x4B000000U, 0x7540U | (e % 4)))) -
         8388736.0F;
}

// Value e of a unit, as the loader widens it (a * q rounded, minus b rounded) in one fused
// multiply-add: where b is nonzero a * q is exact in f32 (a: an f16 times a 6-bit scale at most,
// 17 bits; q: 5 bits at most), and where a * q may round (Q6_K: 19 + 6 bits) b is zero.
__device__ __forceinline__ float value(const Unit& u, int e) {
  return fmaf(u.a[e / 16], quant(u, e), -u.b[e / 16]);
}

// Unit `unit` of row `row` of a tensor of F blocks, `units` a row.
template <class F>
__device__ __forceinline__ Unit row_unit(const Planes& P, int64_t row, int units, int unit) {
  constexpr int kUnits = F::kValues / 32;
  return F::unit(P, row * (units / kUnits) + unit / kUnits, unit % kUnits);
}

// The planes of a tensor of `blocks` F blocks at base.
template <class F>
Planes planes_of(const void* base, int64_t blocks) {
  Planes out{};
  int64_t at = 0;
  for (int k = 0; k < F::kPlaneCount; ++k) {
    out.p[k] = static_cast<const uint8_t*>(base) + at;
    at += blocks * F::kPlanes[k].size;
  }
  return out;
}

// Runs f(F{}) for the format of dtype t; false when the device keeps no such format.
template <class Fn>
bool with_format(DType t, Fn&& f) {
  const auto one = [&](auto format) {
    if (t != decltype(format)::kType) return false;
    f(format);
    return true;
  };
  return one(Q8_0{}) || one(Q4_0{}) || one(Q4_1{}) || one(Q4_K{}) || one(Q5_K{}) || one(Q6_K{});
}

}  // namespace nanoinfer::cuda::quant
