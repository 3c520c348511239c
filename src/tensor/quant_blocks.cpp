#include "tensor/quant_blocks.h"

#include <cstring>

#include "util/error.h"

namespace nanoinfer {
namespace {

float f16_at(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_f32(h);
}

float f(int v) {
  return static_cast<float>(v);
}

// 32-value formats: byte j of the nibbles holds value j (low) and value j + 16 (high).

void q8_0(const uint8_t* b, float* y) {
  const float d = f16_at(b);
  const auto* q = reinterpret_cast<const int8_t*>(b + 2);
  for (int j = 0; j < 32; ++j) y[j] = f(q[j]) * d;
}

void q4_0(const uint8_t* b, float* y) {
  const float d = f16_at(b);
  const uint8_t* q = b + 2;
  for (int j = 0; j < 16; ++j) {
    y[j] = f((q[j] & 0xF) - 8) * d;
    y[j + 16] = f((q[j] >> 4) - 8) * d;
  }
}

void q4_1(const uint8_t* b, float* y) {
  const float d = f16_at(b), m = f16_at(b + 2);
  const uint8_t* q = b + 4;
  for (int j = 0; j < 16; ++j) {
    y[j] = f(q[j] & 0xF) * d + m;
    y[j + 16] = f(q[j] >> 4) * d + m;
  }
}

// Q5_0 / Q5_1: a 32-bit word of fifth bits, bit j for value j.
void q5(const uint8_t* b, float* y, bool with_min) {
  const float d = f16_at(b), m = with_min ? f16_at(b + 2) : 0.0F;
  const uint8_t* p = b + (with_min ? 4 : 2);
  uint32_t qh;
  std::memcpy(&qh, p, 4);
  const uint8_t* q = p + 4;
  for (int j = 0; j < 16; ++j) {
    const int lo = (q[j] & 0xF) | static_cast<int>(((qh >> j) & 1U) << 4);
    const int hi = (q[j] >> 4) | static_cast<int>(((qh >> (j + 16)) & 1U) << 4);
    if (with_min) {
      y[j] = f(lo) * d + m;
      y[j + 16] = f(hi) * d + m;
    } else {
      y[j] = f(lo - 16) * d;
      y[j + 16] = f(hi - 16) * d;
    }
  }
}

// IQ4_NL and IQ4_XS map each nibble through this table.
constexpr int8_t kIq4Values[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                   1,    13,   25,  38,  53,  69,  89,  113};

void iq4_nl(const uint8_t* b, float* y) {
  const float d = f16_at(b);
  const uint8_t* q = b + 2;
  for (int j = 0; j < 16; ++j) {
    y[j] = d * f(kIq4Values[q[j] & 0xF]);
    y[j + 16] = d * f(kIq4Values[q[j] >> 4]);
  }
}

// 256-value formats. Q2_K and Q3_K: two halves of 128 values, each reading 32 bytes of 2-bit
// quants four times (shift 0, 2, 4, 6); each pass covers 16 sub-blocks' worth: bytes 0-15 with
// one scale, bytes 16-31 with the next.

void q2_k(const uint8_t* b, float* y) {
  const uint8_t* sc = b;
  const uint8_t* qs = b + 16;
  const float d = f16_at(b + 80), dmin = f16_at(b + 82);
  for (int half = 0; half < 2; ++half) {
    const uint8_t* q = qs + 32 * half;
    for (int pass = 0; pass < 4; ++pass) {
      for (int part = 0; part < 2; ++part) {
        const uint8_t s = sc[8 * half + 2 * pass + part];
        const float dl = d * f(s & 0xF), ml = dmin * f(s >> 4);
        float* o = y + 128 * half + 32 * pass + 16 * part;
        for (int l = 0; l < 16; ++l) o[l] = dl * f((q[16 * part + l] >> (2 * pass)) & 3) - ml;
      }
    }
  }
}

// Q3_K's 16 six-bit scales: low four bits in bytes 0-7 (values 0-7 low nibble, 8-15 high nibble),
// top two bits in bytes 8-11 (value i in byte 8 + i % 4, bits 2 * (i / 4)).
int q3_k_scale(const uint8_t* s, int i) {
  const int lo = i < 8 ? s[i] & 0xF : s[i - 8] >> 4;
  const int hi = (s[8 + i % 4] >> (2 * (i / 4))) & 3;
  return (lo | (hi << 4)) - 32;
}

void q3_k(const uint8_t* b, float* y) {
  const uint8_t* hmask = b;
  const uint8_t* qs = b + 32;
  const uint8_t* sc = b + 96;
  const float d = f16_at(b + 108);
  for (int half = 0; half < 2; ++half) {
    const uint8_t* q = qs + 32 * half;
    for (int pass = 0; pass < 4; ++pass) {
      const int bit = 1 << (4 * half + pass);  // the high bit of each value, in hmask
      for (int part = 0; part < 2; ++part) {
        const float dl = d * f(q3_k_scale(sc, 8 * half + 2 * pass + part));
        float* o = y + 128 * half + 32 * pass + 16 * part;
        for (int l = 0; l < 16; ++l) {
          const int i = 16 * part + l;
          const int v = ((q[i] >> (2 * pass)) & 3) - ((hmask[i] & bit) != 0 ? 0 : 4);
          o[l] = dl * f(v);
        }
      }
    }
  }
}

// Q4_K / Q5_K: 8 sub-blocks of 32, six-bit scale and min each, packed in 12 bytes.
void k_scale_min(const uint8_t* s, int j, int* sc, int* m) {
  if (j < 4) {
    *sc = s[j] & 63;
    *m = s[j + 4] & 63;
  } else {
    *sc = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
    *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

// Four chunks of 64 values: chunk c reads 32 bytes of nibbles, low nibbles with sub-block 2c,
// high nibbles with 2c + 1; Q5_K's fifth bit of byte l is bit 2c (low) or 2c + 1 (high) of qh[l].
void q45_k(const uint8_t* b, float* y, bool five) {
  const float d = f16_at(b), dmin = f16_at(b + 2);
  const uint8_t* sc = b + 4;
  const uint8_t* qh = b + 16;
  const uint8_t* qs = b + (five ? 48 : 16);
  for (int c = 0; c < 4; ++c) {
    const uint8_t* q = qs + 32 * c;
    for (int nib = 0; nib < 2; ++nib) {
      int s = 0, m = 0;
      k_scale_min(sc, 2 * c + nib, &s, &m);
      const float dl = d * f(s), ml = dmin * f(m);
      float* o = y + 64 * c + 32 * nib;
      for (int l = 0; l < 32; ++l) {
        int v = nib == 0 ? q[l] & 0xF : q[l] >> 4;
        if (five && ((qh[l] >> (2 * c + nib)) & 1) != 0) v += 16;
        o[l] = dl * f(v) - ml;
      }
    }
  }
}

// Q6_K: two halves of 128 values, each four groups of 32: group g takes the low (g < 2) or high
// nibbles of 32 of the half's 64 low bytes (bytes 0-31 for even g, 32-63 for odd g) and bits
// 2g, 2g + 1 of its 32 high bytes; 16 signed scales, one per 16 values.
void q6_k(const uint8_t* b, float* y) {
  const float d = f16_at(b + 208);
  const auto* sc = reinterpret_cast<const int8_t*>(b + 192);
  for (int half = 0; half < 2; ++half) {
    const uint8_t* qh = b + 128 + 32 * half;
    for (int g = 0; g < 4; ++g) {
      const uint8_t* ql = b + 64 * half + 32 * (g & 1);
      const int shift = g < 2 ? 0 : 4;
      for (int part = 0; part < 2; ++part) {
        const float dl = d * f(sc[8 * half + 2 * g + part]);
        float* o = y + 128 * half + 32 * g + 16 * part;
        for (int l = 0; l < 16; ++l) {
          const int i = 16 * part + l;
          o[l] = dl * f((((ql[i] >> shift) & 0xF) | (((qh[i] >> (2 * g)) & 3) << 4)) - 32);
        }
      }
    }
  }
}

// IQ4_XS: 8 sub-blocks of 32, six-bit scales (low nibbles in 4 bytes, top pairs in a 16-bit word).
void iq4_xs(const uint8_t* b, float* y) {
  const float d = f16_at(b);
  uint16_t high;
  std::memcpy(&high, b + 2, 2);
  const uint8_t* low = b + 4;
  const uint8_t* qs = b + 8;
  for (int ib = 0; ib < 8; ++ib) {
    const int ls = ((low[ib / 2] >> (4 * (ib % 2))) & 0xF) | (((high >> (2 * ib)) & 3) << 4);
    const float dl = d * f(ls - 32);
    const uint8_t* q = qs + 16 * ib;
    for (int j = 0; j < 16; ++j) {
      y[32 * ib + j] = dl * f(kIq4Values[q[j] & 0xF]);
      y[32 * ib + j + 16] = dl * f(kIq4Values[q[j] >> 4]);
    }
  }
}

template <class F>
void each(const uint8_t* src, int64_t blocks, float* dst, DType t, F&& block) {
  const size_t bytes = dtype_size(t);
  const int64_t n = dtype_block(t);
  for (int64_t i = 0; i < blocks; ++i) block(src + static_cast<size_t>(i) * bytes, dst + i * n);
}

}  // namespace

void dequantize_blocks(DType type, const uint8_t* src, int64_t blocks, float* dst) {
  switch (type) {
    case DType::Q8_0:
      return each(src, blocks, dst, type, q8_0);
    case DType::Q4_0:
      return each(src, blocks, dst, type, q4_0);
    case DType::Q4_1:
      return each(src, blocks, dst, type, q4_1);
    case DType::Q5_0:
      return each(src, blocks, dst, type, [](const uint8_t* b, float* y) { q5(b, y, false); });
    case DType::Q5_1:
      return each(src, blocks, dst, type, [](const uint8_t* b, float* y) { q5(b, y, true); });
    case DType::IQ4_NL:
      return each(src, blocks, dst, type, iq4_nl);
    case DType::Q2_K:
      return each(src, blocks, dst, type, q2_k);
    case DType::Q3_K:
      return each(src, blocks, dst, type, q3_k);
    case DType::Q4_K:
      return each(src, blocks, dst, type, [](const uint8_t* b, float* y) { q45_k(b, y, false); });
    case DType::Q5_K:
      return each(src, blocks, dst, type, [](const uint8_t* b, float* y) { q45_k(b, y, true); });
    case DType::Q6_K:
      return each(src, blocks, dst, type, q6_k);
    case DType::IQ4_XS:
      return each(src, blocks, dst, type, iq4_xs);
    case DType::F32:
    case DType::F16:
    case DType::BF16:
    case DType::I32:
      break;
  }
  NI_ASSERT(false && "dequantize_blocks: not a block format");
}

}  // namespace nanoinfer
