// convert.cpp — dtype kernels: a portable scalar path and AVX2+F16C kernels chosen at run time,
// both bit-exact with torch's CPU Tensor.to(dtype) on x86-64.
//
// What "bit-exact with torch" means, measured against torch 2.13 (AVX2 and AVX512 capability give
// the same bits):
//  - Every conversion goes through float32, including F64 -> F16/BF16: torch rounds the double
//    to float first, so 1 + 2^-11 + 2^-40 becomes F16 1.0, not the correctly rounded 1 + 2^-10.
//  - Rounding is to nearest, ties to even; overflow gives Inf; subnormals are kept, never flushed.
//  - NaN bits follow the instructions torch's vector kernels use: F16, F8_E5M2 and F64 inputs and
//    every F16/F64 output are quieted with the top payload bits kept (vcvtph2ps, vcvtps2ph,
//    cvtpd2ps, cvtps2pd); BF16 -> F32 is a plain shift, so a signalling NaN stays signalling;
//    the F8_E4M3 NaN (S.1111.111) becomes 0x7FF00000 with its sign, as in c10.
//  - BF16 outputs: any NaN from F32 or F64 becomes 0xFFFF (torch's Vectorized cvtfp32_bf16);
//    from every other source it becomes 0x7FC0 (c10::BFloat16's round_to_nearest_even).
//  - torch's own results differ in two places we do not copy: the last (n mod 8) elements of an
//    F16 -> F32 copy give 0x7FFFFFFF for every NaN, and the last (n mod 16) of F64 -> BF16 give
//    0x7FC0; we give what torch gives for the rest of a large tensor. torch built without SIMD
//    (ATen DEFAULT capability) keeps fewer NaN payload bits; we follow the x86 builds.
#include "convert.h"

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define WARPLOAD_X86_SIMD 1
#endif

namespace warpload {
namespace {

template <DType> struct Storage;
template <> struct Storage<DType::F64> { using type = uint64_t; };
template <> struct Storage<DType::F32> { using type = uint32_t; };
template <> struct Storage<DType::F16> { using type = uint16_t; };
template <> struct Storage<DType::BF16> { using type = uint16_t; };
template <> struct Storage<DType::F8_E4M3> { using type = uint8_t; };
template <> struct Storage<DType::F8_E5M2> { using type = uint8_t; };

template <DType T> using bits_t = typename Storage<T>::type;
template <DType T> constexpr size_t width = sizeof(bits_t<T>);

template <typename T> T load(const unsigned char* p) {
    T v;
    std::memcpy(&v, p, sizeof v);
    return v;
}

template <typename T> void store(unsigned char* p, T v) { std::memcpy(p, &v, sizeof v); }

template <typename To, typename From> To bit_cast(From v) {
    static_assert(sizeof(To) == sizeof(From), "bit_cast needs equal sizes");
    To out;
    std::memcpy(&out, &v, sizeof out);
    return out;
}

constexpr uint32_t kF32Abs = 0x7FFFFFFFu;
constexpr uint32_t kF32Inf = 0x7F800000u;
constexpr uint32_t kF32Quiet = 0x00400000u;

uint32_t f16_to_f32(uint16_t h) {
    const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
    const uint32_t exponent = (h >> 10) & 0x1Fu;
    const uint32_t mantissa = h & 0x3FFu;
    if (exponent == 0x1F) {
        return sign | kF32Inf | (mantissa << 13) | (mantissa != 0 ? kF32Quiet : 0u);
    }
    if (exponent == 0) {
        // Subnormal (or zero): mantissa * 2^-24 is exact in float and normal there.
        return sign | bit_cast<uint32_t>(static_cast<float>(mantissa) * 0x1p-24f);
    }
    return sign | ((exponent + 112) << 23) | (mantissa << 13);
}

uint32_t bf16_to_f32(uint16_t b) { return static_cast<uint32_t>(b) << 16; }

// float8_e4m3fn has no Inf; S.1111.111 is its only NaN.
uint32_t e4m3_to_f32(uint8_t b) {
    const uint32_t sign = static_cast<uint32_t>(b & 0x80u) << 24;
    const uint32_t exponent = (b >> 3) & 0xFu;
    const uint32_t mantissa = b & 0x7u;
    if ((b & 0x7Fu) == 0x7Fu) return sign | 0x7FF00000u;
    if (exponent == 0) {
        return sign | bit_cast<uint32_t>(static_cast<float>(mantissa) * 0x1p-9f);
    }
    return sign | ((exponent + 120) << 23) | (mantissa << 20);
}

// float8_e5m2 is the top byte of an IEEE half.
uint32_t e5m2_to_f32(uint8_t b) { return f16_to_f32(static_cast<uint16_t>(b << 8)); }

// Finite values use the hardware double -> float conversion (round to nearest even under the
// default floating-point environment, as torch assumes); NaN is spelled out so that every
// platform keeps cvtsd2ss's quiet-and-truncate payload.
uint32_t f64_to_f32(uint64_t d) {
    if ((d & 0x7FFFFFFFFFFFFFFFull) > 0x7FF0000000000000ull) {
        const uint32_t sign = static_cast<uint32_t>(d >> 32) & 0x80000000u;
        return sign | kF32Inf | kF32Quiet | static_cast<uint32_t>((d >> 29) & 0x7FFFFFu);
    }
    return bit_cast<uint32_t>(static_cast<float>(bit_cast<double>(d)));
}

uint64_t f32_to_f64(uint32_t f) {
    if ((f & kF32Abs) > kF32Inf) {
        const uint64_t sign = static_cast<uint64_t>(f & 0x80000000u) << 32;
        return sign | 0x7FF8000000000000ull | (static_cast<uint64_t>(f & 0x7FFFFFu) << 29);
    }
    return bit_cast<uint64_t>(static_cast<double>(bit_cast<float>(f)));
}

uint16_t f32_to_f16(uint32_t f) {
    const uint16_t sign = static_cast<uint16_t>((f >> 16) & 0x8000u);
    uint32_t abs = f & kF32Abs;
    if (abs > kF32Inf) return sign | 0x7E00u | static_cast<uint16_t>((abs >> 13) & 0x3FFu);
    // 65520 = 0x477FF000 is halfway from the largest half (65504, odd mantissa) to 2^16: it and
    // everything above round to Inf.
    if (abs >= 0x477FF000u) return sign | 0x7C00u;
    if (abs >= 0x38800000u) {  // at least 2^-14: a normal half
        abs += 0xFFFu + ((abs >> 13) & 1u);
        return sign | static_cast<uint16_t>((abs - 0x38000000u) >> 13);
    }
    // 2^-25 (0x33000000) is the tie between 0 and the smallest subnormal 2^-24; even is 0.
    if (abs <= 0x33000000u) return sign;
    // Subnormal half: round the 24-bit significand to units of 2^-24 (shift 14..24).
    const uint32_t significand = (abs & 0x7FFFFFu) | 0x800000u;
    const uint32_t shift = 126 - (abs >> 23);
    const uint32_t rest = significand & ((1u << shift) - 1);
    const uint32_t half = 1u << (shift - 1);
    uint32_t q = significand >> shift;
    q += (rest > half || (rest == half && (q & 1u))) ? 1u : 0u;
    return sign | static_cast<uint16_t>(q);
}

uint16_t f32_to_bf16(uint32_t f, uint16_t nan) {
    if ((f & kF32Abs) > kF32Inf) return nan;
    return static_cast<uint16_t>((f + 0x7FFFu + ((f >> 16) & 1u)) >> 16);
}

// See the file comment: which BF16 NaN torch writes depends on the kernel the source type takes.
constexpr uint16_t bf16_nan_from(DType src) {
    return (src == DType::F32 || src == DType::F64) ? 0xFFFFu : 0x7FC0u;
}

template <DType S> uint32_t load_as_f32(const unsigned char* p) {
    const bits_t<S> v = load<bits_t<S>>(p);
    if constexpr (S == DType::F64) return f64_to_f32(v);
    if constexpr (S == DType::F32) return v;
    if constexpr (S == DType::F16) return f16_to_f32(v);
    if constexpr (S == DType::BF16) return bf16_to_f32(v);
    if constexpr (S == DType::F8_E4M3) return e4m3_to_f32(v);
    if constexpr (S == DType::F8_E5M2) return e5m2_to_f32(v);
}

template <DType S, DType D> bits_t<D> from_f32(uint32_t f) {
    if constexpr (D == DType::F64) return f32_to_f64(f);
    if constexpr (D == DType::F32) return f;
    if constexpr (D == DType::F16) return f32_to_f16(f);
    if constexpr (D == DType::BF16) return f32_to_bf16(f, bf16_nan_from(S));
}

using Kernel = void (*)(const unsigned char* src, unsigned char* dst, size_t n);

template <DType S, DType D> void convert_scalar(const unsigned char* src, unsigned char* dst, size_t n) {
    for (size_t i = 0; i < n; ++i) {
        store(dst + i * width<D>, from_f32<S, D>(load_as_f32<S>(src + i * width<S>)));
    }
}

// An F8 source has 256 values, so the scalar path converts through a table built from the
// element functions: 4.2 G elements/s against 0.4-0.7 calling them per element (one Zen 4 core).
template <DType S, DType D> void convert_f8(const unsigned char* src, unsigned char* dst, size_t n) {
    struct Table {
        bits_t<D> to[256];
        Table() {
            for (unsigned b = 0; b < 256; ++b) {
                const unsigned char byte = static_cast<unsigned char>(b);
                to[b] = from_f32<S, D>(load_as_f32<S>(&byte));
            }
        }
    };
    static const Table table;
    for (size_t i = 0; i < n; ++i) store(dst + i * width<D>, table.to[src[i]]);
}

template <DType S, DType D> constexpr Kernel scalar_kernel() {
    if constexpr (S == DType::F8_E4M3 || S == DType::F8_E5M2) {
        return &convert_f8<S, D>;
    } else {
        return &convert_scalar<S, D>;
    }
}

#ifdef WARPLOAD_X86_SIMD
#define WARPLOAD_AVX2 __attribute__((target("avx2,f16c")))

// Eight elements of S widened to float exactly as the scalar load_as_f32 does.
template <DType S> WARPLOAD_AVX2 inline __m256 load8_as_f32(const unsigned char* p) {
    if constexpr (S == DType::F64) {
        const __m128 lo = _mm256_cvtpd_ps(_mm256_loadu_pd(reinterpret_cast<const double*>(p)));
        const __m128 hi = _mm256_cvtpd_ps(_mm256_loadu_pd(reinterpret_cast<const double*>(p + 32)));
        return _mm256_set_m128(hi, lo);
    }
    if constexpr (S == DType::F32) return _mm256_loadu_ps(reinterpret_cast<const float*>(p));
    if constexpr (S == DType::F16) {
        return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    }
    if constexpr (S == DType::BF16) {
        const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
        return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
    }
    if constexpr (S == DType::F8_E4M3) {
        // Integer only, like e4m3_to_f32: a float multiply would flush subnormals under DAZ.
        const __m256i bytes = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
        const __m256i sign = _mm256_slli_epi32(_mm256_and_si256(bytes, _mm256_set1_epi32(0x80)), 24);
        const __m256i magnitude = _mm256_and_si256(bytes, _mm256_set1_epi32(0x7F));
        const __m256i normal = _mm256_add_epi32(_mm256_slli_epi32(magnitude, 20), _mm256_set1_epi32(120 << 23));
        // Subnormals are m * 2^-9 for m = 0..7, looked up by the low three bits.
        const __m256i subnormals = _mm256_setr_epi32(0, 0x3B000000, 0x3B800000, 0x3BC00000, 0x3C000000,
                                                     0x3C200000, 0x3C400000, 0x3C600000);
        const __m256i is_subnormal = _mm256_cmpgt_epi32(_mm256_set1_epi32(8), magnitude);
        const __m256i is_nan = _mm256_cmpeq_epi32(magnitude, _mm256_set1_epi32(0x7F));
        __m256i value = _mm256_blendv_epi8(normal, _mm256_permutevar8x32_epi32(subnormals, magnitude), is_subnormal);
        value = _mm256_blendv_epi8(value, _mm256_set1_epi32(0x7FF00000), is_nan);
        return _mm256_castsi256_ps(_mm256_or_si256(value, sign));
    }
    if constexpr (S == DType::F8_E5M2) {
        const __m128i bytes = _mm_cvtepu8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
        return _mm256_cvtph_ps(_mm_slli_epi16(bytes, 8));
    }
}

// Round eight floats to BF16 in the low half of each 32-bit lane (same formula as f32_to_bf16).
WARPLOAD_AVX2 inline __m256i round_to_bf16(__m256 x, uint16_t nan) {
    const __m256i bits = _mm256_castps_si256(x);
    const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
    const __m256i bias = _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7FFF));
    const __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(bits, bias), 16);
    const __m256i ordered = _mm256_castps_si256(_mm256_cmp_ps(x, x, _CMP_ORD_Q));
    return _mm256_blendv_epi8(_mm256_set1_epi32(nan), rounded, ordered);
}

// Sixteen floats (a then b) narrowed or widened to D exactly as the scalar from_f32 does.
template <DType S, DType D> WARPLOAD_AVX2 inline void store16_from_f32(unsigned char* p, __m256 a, __m256 b) {
    if constexpr (D == DType::F64) {
        double* out = reinterpret_cast<double*>(p);
        _mm256_storeu_pd(out, _mm256_cvtps_pd(_mm256_castps256_ps128(a)));
        _mm256_storeu_pd(out + 4, _mm256_cvtps_pd(_mm256_extractf128_ps(a, 1)));
        _mm256_storeu_pd(out + 8, _mm256_cvtps_pd(_mm256_castps256_ps128(b)));
        _mm256_storeu_pd(out + 12, _mm256_cvtps_pd(_mm256_extractf128_ps(b, 1)));
    }
    if constexpr (D == DType::F32) {
        _mm256_storeu_ps(reinterpret_cast<float*>(p), a);
        _mm256_storeu_ps(reinterpret_cast<float*>(p + 32), b);
    }
    if constexpr (D == DType::F16) {
        __m128i* out = reinterpret_cast<__m128i*>(p);
        _mm_storeu_si128(out, _mm256_cvtps_ph(a, _MM_FROUND_TO_NEAREST_INT));
        _mm_storeu_si128(out + 1, _mm256_cvtps_ph(b, _MM_FROUND_TO_NEAREST_INT));
    }
    if constexpr (D == DType::BF16) {
        // packus works per 128-bit lane; the permute puts the four 64-bit groups back in order.
        const __m256i packed = _mm256_packus_epi32(round_to_bf16(a, bf16_nan_from(S)),
                                                   round_to_bf16(b, bf16_nan_from(S)));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm256_permute4x64_epi64(packed, 0xD8));
    }
}

template <DType S, DType D> WARPLOAD_AVX2 void convert_avx2(const unsigned char* src, unsigned char* dst, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const unsigned char* in = src + i * width<S>;
        store16_from_f32<S, D>(dst + i * width<D>, load8_as_f32<S>(in), load8_as_f32<S>(in + 8 * width<S>));
    }
    scalar_kernel<S, D>()(src + i * width<S>, dst + i * width<D>, n - i);
}
#endif

constexpr int kDTypes = 7;

struct KernelTable {
    Kernel at[kDTypes][kDTypes] = {};
};

template <DType S, DType D> Kernel pick_kernel([[maybe_unused]] bool simd) {
#ifdef WARPLOAD_X86_SIMD
    if (simd) return &convert_avx2<S, D>;
#endif
    return scalar_kernel<S, D>();
}

template <DType S, DType D> void add_kernel(KernelTable& table, bool simd) {
    if constexpr (S != D) table.at[static_cast<int>(S)][static_cast<int>(D)] = pick_kernel<S, D>(simd);
}

template <DType S> void add_row(KernelTable& table, bool simd) {
    add_kernel<S, DType::F64>(table, simd);
    add_kernel<S, DType::F32>(table, simd);
    add_kernel<S, DType::F16>(table, simd);
    add_kernel<S, DType::BF16>(table, simd);
}

// WARPLOAD_DISABLE_SIMD=1 forces the scalar path, so tests can hold both paths to the same bits.
bool use_simd() {
#ifdef WARPLOAD_X86_SIMD
    const char* disable = std::getenv("WARPLOAD_DISABLE_SIMD");
    if (disable != nullptr && disable[0] != '\0' && std::strcmp(disable, "0") != 0) return false;
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
#else
    return false;
#endif
}

const KernelTable& kernels() {
    static const KernelTable table = [] {
        KernelTable t;
        const bool simd = use_simd();
        add_row<DType::F64>(t, simd);
        add_row<DType::F32>(t, simd);
        add_row<DType::F16>(t, simd);
        add_row<DType::BF16>(t, simd);
        add_row<DType::F8_E4M3>(t, simd);
        add_row<DType::F8_E5M2>(t, simd);
        return t;
    }();
    return table;
}

Kernel find_kernel(DType src, DType dst) {
    const int s = static_cast<int>(src);
    const int d = static_cast<int>(dst);
    if (s < 0 || s >= kDTypes || d < 0 || d >= kDTypes) return nullptr;
    return kernels().at[s][d];
}

std::string dtype_name(DType dtype) {
    switch (dtype) {
        case DType::Raw: return "Raw";
        case DType::F64: return "F64";
        case DType::F32: return "F32";
        case DType::F16: return "F16";
        case DType::BF16: return "BF16";
        case DType::F8_E4M3: return "F8_E4M3";
        case DType::F8_E5M2: return "F8_E5M2";
        case DType::Raw16: return "Raw16";
        case DType::Raw32: return "Raw32";
        case DType::Raw64: return "Raw64";
    }
    return "dtype code " + std::to_string(static_cast<int>(dtype));
}

}  // namespace

bool can_convert(DType src, DType dst) { return find_kernel(src, dst) != nullptr; }

void convert(const void* src, DType src_dtype, void* dst, DType dst_dtype, size_t n) {
    const Kernel kernel = find_kernel(src_dtype, dst_dtype);
    if (kernel == nullptr) {
        throw std::invalid_argument(
            "cannot convert " + dtype_name(src_dtype) + " to " + dtype_name(dst_dtype) +
            ": conversions exist between F64, F32, F16 and BF16, and from F8_E4M3 or F8_E5M2 "
            "to those four; equal dtypes are copied, not converted");
    }
    kernel(static_cast<const unsigned char*>(src), static_cast<unsigned char*>(dst), n);
}

namespace {

template <typename Unit, Unit (*reverse)(Unit)>
void byteswap_units(const uint8_t* src, uint8_t* dst, size_t count) {
    // memcpy in and out: storages in a zip record need not be aligned to their element size.
    for (size_t i = 0; i < count; ++i) {
        Unit value;
        std::memcpy(&value, src + i * sizeof(Unit), sizeof(Unit));
        value = reverse(value);
        std::memcpy(dst + i * sizeof(Unit), &value, sizeof(Unit));
    }
}

uint16_t reverse16(uint16_t value) { return __builtin_bswap16(value); }
uint32_t reverse32(uint32_t value) { return __builtin_bswap32(value); }
uint64_t reverse64(uint64_t value) { return __builtin_bswap64(value); }

}  // namespace

void byteswap_copy(const uint8_t* src, uint8_t* dst, size_t nbytes, size_t width) {
    switch (width) {
        case 2: return byteswap_units<uint16_t, reverse16>(src, dst, nbytes / 2);
        case 4: return byteswap_units<uint32_t, reverse32>(src, dst, nbytes / 4);
        case 8: return byteswap_units<uint64_t, reverse64>(src, dst, nbytes / 8);
        default: throw std::invalid_argument("byteswap_copy: unit width must be 2, 4 or 8");
    }
}

}  // namespace warpload
