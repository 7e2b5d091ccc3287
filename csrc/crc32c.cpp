// crc32c.cpp — CRC-32C: slicing-by-8 tables (portable) and the SSE4.2 crc32 instruction, picked once at run time.
#include "crc32c.h"

#include <array>
#include <cstring>

#if defined(__x86_64__)
#include <nmmintrin.h>
#define WARPLOAD_CRC32C_X86 1
#endif

namespace warpload {

namespace {

constexpr uint32_t kPolynomial = 0x82F63B78u;  // Castagnoli, reflected

using Tables = std::array<std::array<uint32_t, 256>, 8>;

Tables make_tables() {
    Tables t{};
    for (uint32_t i = 0; i < 256; ++i) {
        uint32_t crc = i;
        for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ ((crc & 1u) ? kPolynomial : 0u);
        t[0][i] = crc;
    }
    for (uint32_t i = 0; i < 256; ++i) {
        for (size_t k = 1; k < 8; ++k) t[k][i] = (t[k - 1][i] >> 8) ^ t[0][t[k - 1][i] & 0xffu];
    }
    return t;
}

const Tables& tables() {
    static const Tables t = make_tables();
    return t;
}

#ifdef WARPLOAD_CRC32C_X86
__attribute__((target("sse4.2"))) uint32_t crc32c_sse42(uint32_t crc, const uint8_t* data, size_t n) {
    uint64_t state = ~crc;
    for (; n >= 8; n -= 8, data += 8) {
        uint64_t word;
        std::memcpy(&word, data, 8);  // unaligned-safe
        state = _mm_crc32_u64(state, word);
    }
    uint32_t state32 = static_cast<uint32_t>(state);
    for (; n > 0; --n, ++data) state32 = _mm_crc32_u8(state32, *data);
    return ~state32;
}
#endif

}  // namespace

uint32_t crc32c_portable(uint32_t crc, const uint8_t* data, size_t n) {
    const Tables& t = tables();
    uint32_t state = ~crc;
    for (; n >= 8; n -= 8, data += 8) {
        uint32_t low, high;
        std::memcpy(&low, data, 4);
        std::memcpy(&high, data + 4, 4);
        low ^= state;  // little-endian hosts only, like the rest of the core
        state = t[7][low & 0xffu] ^ t[6][(low >> 8) & 0xffu] ^ t[5][(low >> 16) & 0xffu] ^ t[4][low >> 24] ^
                t[3][high & 0xffu] ^ t[2][(high >> 8) & 0xffu] ^ t[1][(high >> 16) & 0xffu] ^ t[0][high >> 24];
    }
    for (; n > 0; --n, ++data) state = (state >> 8) ^ t[0][(state ^ *data) & 0xffu];
    return ~state;
}

bool crc32c_has_hardware() {
#ifdef WARPLOAD_CRC32C_X86
    static const bool has = __builtin_cpu_supports("sse4.2");
    return has;
#else
    return false;
#endif
}

uint32_t crc32c_hardware(uint32_t crc, const uint8_t* data, size_t n) {
#ifdef WARPLOAD_CRC32C_X86
    if (crc32c_has_hardware()) return crc32c_sse42(crc, data, n);
#endif
    return crc32c_portable(crc, data, n);
}

uint32_t crc32c_extend(uint32_t crc, const uint8_t* data, size_t n) { return crc32c_hardware(crc, data, n); }

}  // namespace warpload
