// dtype.h — the element types the engine converts between; every other dtype is copied as raw bytes.
#pragma once

#include <cstddef>
#include <cstdint>

namespace warpload {

// The numeric codes are part of the Python <-> C++ contract (python/warpload/dtypes.py).
enum class DType : int32_t {
    Raw = 0,  // bytes copied bit-exact: integers, BOOL, complex, exotic floats
    F64 = 1,
    F32 = 2,
    F16 = 3,
    BF16 = 4,
    F8_E4M3 = 5,  // float8_e4m3fn
    F8_E5M2 = 6,
    // Raw elements of 2, 4 and 8 bytes: copied bit-exact like Raw, but with an element size, so
    // a transposing copy moves whole elements.
    Raw16 = 7,
    Raw32 = 8,
    Raw64 = 9,
};

inline size_t itemsize(DType dtype) {
    switch (dtype) {
        case DType::F64:
        case DType::Raw64: return 8;
        case DType::F32:
        case DType::Raw32: return 4;
        case DType::F16:
        case DType::BF16:
        case DType::Raw16: return 2;
        default: return 1;
    }
}

inline bool is_known_dtype(int32_t code) { return code >= 0 && code <= 9; }

}  // namespace warpload
