// GGUF's block-quantised formats (ggml's layouts), widened to f32 the way the reference does it
// (ggml's C code and gguf-py's numpy, which HF transformers uses to load a GGUF): each value is a
// product of f32 factors, with no fused multiply-add, so two correct readers agree bit for bit.
//
//   Q8_0, Q4_0, Q5_0, IQ4_NL   32 values: f16 scale d; value = d * q (IQ4_NL: q from a 16-entry
//                              non-linear table)
//   Q4_1, Q5_1                 32 values: f16 scale d and offset m; value = d * q + m
//   Q2_K, Q4_K, Q5_K           256 values in 16 or 8 sub-blocks, each with its own scale and min
//                              (quantised against f16 d, dmin); value = (d * sc) * q - dmin * m
//   Q3_K, Q6_K, IQ4_XS         256 values, signed sub-block scales; value = (d * sc) * q
#pragma once

#include <cstdint>

#include "tensor/tensor.h"

namespace nanoinfer {

// `blocks` whole blocks of `type` (a block format: dtype_block(type) > 1) from `src` to
// blocks * dtype_block(type) floats at `dst`.
void dequantize_blocks(DType type, const uint8_t* src, int64_t blocks, float* dst);

}  // namespace nanoinfer
