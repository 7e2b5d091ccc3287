// tfbundle_wire.h — bounded reads from a TF bundle's bytes: fixed ints, varints, protobuf fields; every read checked.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>

#include "tfbundle.h"

namespace warpload {
namespace tfbundle {

inline uint32_t load_fixed32(const uint8_t* p) {
    uint32_t v;
    std::memcpy(&v, p, 4);
    return v;  // little-endian hosts only, like the rest of the core
}

inline uint64_t load_fixed64(const uint8_t* p) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    return v;
}

// A bounded byte range of the .index file; every read checks the end and reports file offsets.
// It refers to path and key (for messages), which must outlive it.
class Cursor {
   public:
    // Offsets in messages are base + (position - origin): origin is byte `base` of the file.
    Cursor(const std::string& path, const std::string& key, const uint8_t* origin, const uint8_t* begin,
           const uint8_t* end, uint64_t base = 0)
        : path_(path), key_(key), origin_(origin), base_(base), pos_(begin), end_(end) {}

    bool done() const { return pos_ >= end_; }
    size_t left() const { return static_cast<size_t>(end_ - pos_); }
    uint64_t offset() const { return base_ + static_cast<uint64_t>(pos_ - origin_); }
    const uint8_t* pos() const { return pos_; }

    [[noreturn]] void fail(const std::string& what) const { throw BundleError(path_, key_, offset(), what); }

    uint64_t varint64(const char* what) {
        uint64_t result = 0;
        for (int shift = 0; shift <= 63; shift += 7) {
            if (pos_ >= end_) fail(std::string("truncated varint (") + what + ")");
            uint8_t byte = *pos_++;
            result |= static_cast<uint64_t>(byte & 0x7f) << shift;
            if ((byte & 0x80) == 0) return result;
        }
        fail(std::string("varint longer than 10 bytes (") + what + ")");
    }

    uint32_t varint32(const char* what) {
        const uint8_t* start = pos_;
        uint64_t value = varint64(what);
        if (pos_ - start > 5 || value > 0xffffffffull) {
            pos_ = start;
            fail(std::string("varint32 out of range (") + what + ")");
        }
        return static_cast<uint32_t>(value);
    }

    uint32_t fixed32(const char* what) {
        if (left() < 4) fail(std::string("truncated fixed32 (") + what + ")");
        uint32_t v = load_fixed32(pos_);
        pos_ += 4;
        return v;
    }

    Cursor sub(uint64_t n, const char* what) {
        if (n > left()) {
            fail(std::string(what) + " of " + std::to_string(n) + " bytes runs past its end (" +
                 std::to_string(left()) + " bytes left)");
        }
        Cursor inner(path_, key_, origin_, pos_, pos_ + n, base_);
        pos_ += n;
        return inner;
    }

    void skip_field(uint32_t wire_type, uint32_t field) {
        switch (wire_type) {
            case 0: varint64("unknown field"); return;
            case 1: sub(8, "fixed64 field"); return;
            case 2: sub(varint64("field length"), "length-delimited field"); return;
            case 5: sub(4, "fixed32 field"); return;
            default:
                fail("field " + std::to_string(field) + " has wire type " + std::to_string(wire_type) +
                     ", which protobuf does not allow here");
        }
    }

   private:
    const std::string& path_;
    const std::string& key_;
    const uint8_t* origin_;
    uint64_t base_;
    const uint8_t* pos_;
    const uint8_t* end_;
};


// One field of a protobuf message; the typed getters check the wire type before reading.
struct Field {
    Cursor& cursor;
    uint32_t number;
    uint32_t wire;
    const char* message;

    void expect(uint32_t expected) const {
        if (wire != expected) {
            cursor.fail(std::string(message) + " field " + std::to_string(number) + " has wire type " +
                        std::to_string(wire) + ", expected " + std::to_string(expected));
        }
    }
    uint64_t varint() const {
        expect(0);
        return cursor.varint64(message);
    }
    // proto3 int32 and enums are sign-extended int64 varints on the wire.
    int32_t int32() const { return static_cast<int32_t>(static_cast<int64_t>(varint())); }
    int64_t int64() const { return static_cast<int64_t>(varint()); }
    uint32_t fixed32() const {
        expect(5);
        return cursor.fixed32(message);
    }
    Cursor bytes() const {
        expect(2);
        return cursor.sub(cursor.varint64(message), message);
    }
};

// Calls visit(field) for each field of a message; fields it returns false for are skipped by wire type,
// as protobuf skips unknown fields.
template <typename Visit>
void for_each_field(Cursor cursor, const char* message, Visit&& visit) {
    while (!cursor.done()) {
        uint64_t tag = cursor.varint64(message);
        Field field{cursor, static_cast<uint32_t>(tag >> 3), static_cast<uint32_t>(tag & 7), message};
        if (!visit(field)) cursor.skip_field(field.wire, field.number);
    }
}

}  // namespace tfbundle
}  // namespace warpload
