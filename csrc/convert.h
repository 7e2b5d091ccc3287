// convert.h — dtype conversion kernels, bit-exact with torch's CPU Tensor.to(dtype).
#pragma once

#include <cstddef>

#include "dtype.h"

namespace warpload {

// True when convert() handles src -> dst. Equal dtypes are plain copies and are not
// "conversions"; Raw never converts.
bool can_convert(DType src, DType dst);

// Converts n elements from src to dst. Neither pointer needs to be aligned.
// Throws std::invalid_argument for a pair can_convert() rejects.
void convert(const void* src, DType src_dtype, void* dst, DType dst_dtype, size_t n);

}  // namespace warpload
