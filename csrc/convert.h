// convert.h — dtype conversion kernels, bit-exact with torch's CPU Tensor.to(dtype).
#pragma once

#include <cstddef>
#include <cstdint>

#include "dtype.h"

namespace warpload {

// True when convert() handles src -> dst. Equal dtypes are plain copies and are not
// "conversions"; Raw never converts.
bool can_convert(DType src, DType dst);

// Converts n elements from src to dst. Neither pointer needs to be aligned.
// Throws std::invalid_argument for a pair can_convert() rejects.
void convert(const void* src, DType src_dtype, void* dst, DType dst_dtype, size_t n);

// Copies nbytes from src to dst reversing the bytes of each width-byte unit (2, 4 or 8; nbytes a
// multiple of it): big-endian storages to the host's little-endian order. src and dst may be equal.
void byteswap_copy(const uint8_t* src, uint8_t* dst, size_t nbytes, size_t width);

}  // namespace warpload
