// crc32c.h — CRC-32C (Castagnoli), as LevelDB/TF use it: SSE4.2 instructions when the CPU has them, a table otherwise.
#pragma once

#include <cstddef>
#include <cstdint>

namespace warpload {

// crc32c of data[0, n) continuing from crc (0 to start). Chooses the hardware path at run time.
uint32_t crc32c_extend(uint32_t crc, const uint8_t* data, size_t n);
// The two implementations, exposed so tests can hold them to the same values.
uint32_t crc32c_portable(uint32_t crc, const uint8_t* data, size_t n);
// Falls back to the portable path on CPUs without SSE4.2 (and on non-x86 builds).
uint32_t crc32c_hardware(uint32_t crc, const uint8_t* data, size_t n);
bool crc32c_has_hardware();

// LevelDB's masking (tsl/lib/hash/crc32c.h): stored CRCs are masked so that a CRC of data that
// itself embeds CRCs stays well distributed. Block trailers and BundleEntryProto.crc32c hold masked values.
constexpr uint32_t kCrc32cMaskDelta = 0xa282ead8u;
inline uint32_t crc32c_mask(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + kCrc32cMaskDelta; }
inline uint32_t crc32c_unmask(uint32_t masked) {
    uint32_t rot = masked - kCrc32cMaskDelta;
    return (rot >> 17) | (rot << 15);
}

}  // namespace warpload
