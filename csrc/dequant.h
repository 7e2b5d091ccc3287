// dequant.h — block-scaled FP8 weights to F32/F16/BF16, as transformers' Fp8Dequantize computes them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "dtype.h"

namespace warpload {

// One FP8 matrix (rows x cols, row-major, F8_E4M3 or F8_E5M2) and its float32 scale grid
// (scale_rows x scale_cols, each scale covering a (rows / scale_rows) x (cols / scale_cols) block),
// written to dst (rows * cols elements of dst_dtype: F32, F16 or BF16).
struct Fp8Matrix {
    const uint8_t* weight = nullptr;
    uint64_t weight_nbytes = 0;
    const float* scales = nullptr;
    uint64_t num_scales = 0;
    uint64_t rows = 0, cols = 0, scale_rows = 0, scale_cols = 0;
    DType weight_dtype = DType::F8_E4M3;
    uint8_t* dst = nullptr;
    uint64_t dst_nbytes = 0;
    DType dst_dtype = DType::BF16;
};

// Checks every matrix (sizes, block divisibility, dtypes: std::invalid_argument naming the index)
// before writing anything, then computes dst = round(float32(weight) * scale) on the thread pool:
// one float32 multiply per element and one rounding to dst_dtype, bit-exact with torch's
// (q.to(float32) * s).to(dtype).
void dequantize_fp8(const std::vector<Fp8Matrix>& matrices, size_t num_threads);

}  // namespace warpload
