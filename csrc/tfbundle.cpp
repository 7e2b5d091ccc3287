// tfbundle.cpp — parses TF tensor bundle .index files (a LevelDB-style SSTable of BundleEntryProto) with every read bounds-checked.
#include "tfbundle.h"

#include <atomic>
#include <cstring>

#include "crc32c.h"
#include "tfbundle_wire.h"
#include "thread_pool.h"

namespace warpload {
namespace tfbundle {

namespace {

// tsl/lib/io/format.h: footer = two BlockHandles padded to 40 bytes + 8-byte magic.
constexpr size_t kFooterSize = 48;
constexpr uint64_t kTableMagic = 0xdb4775248b80fb57ull;
// A stored block is followed by a 1-byte compression type and a fixed32 masked CRC.
constexpr size_t kBlockTrailerSize = 5;
constexpr uint8_t kNoCompression = 0;
constexpr uint8_t kSnappyCompression = 1;

struct BlockHandle {
    uint64_t offset;
    uint64_t size;
};

BlockHandle read_handle(Cursor& cursor, const char* what) {
    BlockHandle handle;
    handle.offset = cursor.varint64(what);
    handle.size = cursor.varint64(what);
    return handle;
}

void parse_version(Cursor cursor, Header& header) {
    for_each_field(cursor, "VersionDef", [&](const Field& f) {
        if (f.number == 1) {
            header.producer = f.int32();
        } else if (f.number == 2) {
            header.min_consumer = f.int32();
        } else if (f.number == 3 && f.wire == 2) {  // packed repeated
            for (Cursor packed = f.bytes(); !packed.done();) {
                header.bad_consumers.push_back(static_cast<int32_t>(static_cast<int64_t>(packed.varint64(f.message))));
            }
        } else if (f.number == 3) {
            header.bad_consumers.push_back(f.int32());
        } else {
            return false;
        }
        return true;
    });
}

Header parse_header(Cursor cursor) {
    Header header;
    for_each_field(cursor, "BundleHeaderProto", [&](const Field& f) {
        switch (f.number) {
            case 1: header.num_shards = f.int32(); return true;
            case 2: header.endianness = f.int32(); return true;
            case 3: parse_version(f.bytes(), header); return true;
            default: return false;
        }
    });
    return header;
}

void parse_shape(Cursor cursor, Entry& entry) {
    for_each_field(cursor, "TensorShapeProto", [&](const Field& f) {
        if (f.number == 2) {
            int64_t size = 0;
            for_each_field(f.bytes(), "TensorShapeProto.Dim", [&](const Field& dim) {
                if (dim.number != 1) return false;
                size = dim.int64();
                return true;
            });
            entry.shape.push_back(size);
        } else if (f.number == 3) {
            entry.unknown_rank = f.varint() != 0;
        } else {
            return false;
        }
        return true;
    });
}

std::vector<Extent> parse_slice(Cursor cursor) {
    std::vector<Extent> extents;
    for_each_field(cursor, "TensorSliceProto", [&](const Field& f) {
        if (f.number != 1) return false;
        Extent extent{0, -1};  // no length: the whole dimension
        for_each_field(f.bytes(), "TensorSliceProto.Extent", [&](const Field& e) {
            if (e.number != 1 && e.number != 2) return false;
            (e.number == 1 ? extent.first : extent.second) = e.int64();
            return true;
        });
        extents.push_back(extent);
        return true;
    });
    return extents;
}

void parse_entry(Cursor cursor, Entry& entry) {
    for_each_field(cursor, "BundleEntryProto", [&](const Field& f) {
        switch (f.number) {
            case 1: entry.dtype = f.int32(); return true;
            case 2: parse_shape(f.bytes(), entry); return true;
            case 3: entry.shard_id = f.int32(); return true;
            case 4: entry.offset = f.int64(); return true;
            case 5: entry.size = f.int64(); return true;
            case 6: entry.crc32c = f.fixed32(); return true;
            case 7: entry.slices.push_back(parse_slice(f.bytes())); return true;
            default: return false;
        }
    });
}

// tensor_bundle.cc GetValue / BundleReader: a valid shape (no unknown rank, no negative dimension), a
// shard the header has, a non-negative byte range. Sizes against dtypes and files are checked in Python.
void check_entry(const std::string& path, const Header& header, const Entry& entry) {
    auto fail = [&](const std::string& what) { throw BundleError(path, entry.key, entry.value_offset, what); };
    if (entry.unknown_rank) fail("the shape has unknown rank");
    for (int64_t dim : entry.shape) {
        if (dim < 0) fail("the shape has a negative dimension (" + std::to_string(dim) + ")");
    }
    const int32_t shards = header.num_shards > 0 ? header.num_shards : 1;
    if (entry.shard_id < 0 || entry.shard_id >= shards) {
        fail("it is in data shard " + std::to_string(entry.shard_id) + ", but the bundle has " +
             std::to_string(header.num_shards));
    }
    if (entry.offset < 0 || entry.size < 0) {
        fail("negative data range (offset " + std::to_string(entry.offset) + ", size " + std::to_string(entry.size) + ")");
    }
}

// Reads one stored block: checks that it and its trailer lie before the footer, that its masked
// CRC matches (TF always verifies, format.cc) and that it is uncompressed.
Cursor read_block(const std::string& path, const std::string& key, const uint8_t* data, size_t size,
                  const BlockHandle& handle, const char* what) {
    const uint64_t limit = size - kFooterSize;
    if (handle.offset > limit || handle.size > limit - handle.offset ||
        kBlockTrailerSize > limit - handle.offset - handle.size) {
        throw BundleError(path, key, handle.offset,
                          std::string(what) + " of " + std::to_string(handle.size) + " bytes at offset " +
                              std::to_string(handle.offset) + " (plus its 5-byte trailer) runs past the table's end at " +
                              std::to_string(limit));
    }
    const uint8_t* begin = data + handle.offset;
    const uint8_t* trailer = begin + handle.size;
    uint32_t actual = crc32c_extend(crc32c_extend(0, begin, handle.size), trailer, 1);
    uint32_t stored = crc32c_unmask(load_fixed32(trailer + 1));
    if (actual != stored) {
        throw BundleError(path, key, handle.offset,
                          std::string(what) + " checksum mismatch (stored crc32c " + std::to_string(stored) +
                              ", computed " + std::to_string(actual) + "): the .index file is corrupt");
    }
    if (trailer[0] == kSnappyCompression) {
        throw BundleError(path, key, handle.offset,
                          std::string(what) + " is Snappy-compressed; warpload reads uncompressed bundles, as "
                                              "TensorFlow's BundleWriter writes them. Re-save the checkpoint with TensorFlow");
    }
    if (trailer[0] != kNoCompression) {
        throw BundleError(path, key, handle.offset,
                          std::string(what) + " has block type " + std::to_string(trailer[0]) +
                              " (only 0, none, and 1, Snappy, exist): the .index file is corrupt");
    }
    return Cursor(path, key, data, begin, trailer);
}

// Walks the entries of one block (leveldb block_builder.cc layout), calling visit(key, value).
template <typename Visit>
void for_each_in_block(const std::string& path, Cursor block, const char* what, Visit&& visit) {
    const uint64_t block_offset = block.offset();
    const size_t size = block.left();
    if (size < 4) block.fail(std::string(what) + " of " + std::to_string(size) + " bytes cannot hold its restart count");
    const uint8_t* start = block.pos();
    uint32_t num_restarts = load_fixed32(start + size - 4);
    if (num_restarts > (size - 4) / 4) {
        throw BundleError(path, "", block_offset + size - 4,
                          std::string(what) + " claims " + std::to_string(num_restarts) + " restart points, but has room for " +
                              std::to_string((size - 4) / 4));
    }
    const size_t data_size = size - 4 * (1 + static_cast<size_t>(num_restarts));
    Cursor entries = block.sub(data_size, what);
    std::string key;
    while (!entries.done()) {
        const uint64_t entry_offset = entries.offset();
        uint32_t shared = entries.varint32("key prefix length");
        uint32_t non_shared = entries.varint32("key suffix length");
        uint32_t value_size = entries.varint32("value length");
        if (shared > key.size()) {
            throw BundleError(path, key, entry_offset,
                              "bad entry in block: it shares " + std::to_string(shared) +
                                  " bytes with the previous key, which has " + std::to_string(key.size()));
        }
        Cursor delta = entries.sub(non_shared, "key");
        key.resize(shared);
        key.append(reinterpret_cast<const char*>(delta.pos()), non_shared);
        Cursor value = entries.sub(value_size, "value");
        visit(key, value, entry_offset);
    }
}

}  // namespace

BundleError::BundleError(const std::string& path, const std::string& key, uint64_t offset, const std::string& what)
    : CheckpointError(path + ": " + (key.empty() ? std::string() : "entry '" + printable(key) + "': ") + what +
                          " (at byte " + std::to_string(offset) + " of the file)",
                      path, offset),
      key_(key) {}

std::string printable(const std::string& key) {
    static const char hex[] = "0123456789abcdef";
    std::string out;
    out.reserve(key.size());
    for (unsigned char c : key) {
        if (c >= 0x20 && c < 0x7f && c != '\\') {
            out.push_back(static_cast<char>(c));
        } else {
            out += "\\x";
            out.push_back(hex[c >> 4]);
            out.push_back(hex[c & 15]);
        }
    }
    return out;
}

Index parse_index(const std::string& path, const uint8_t* data, size_t size) {
    const std::string no_key;
    if (size < kFooterSize) {
        throw BundleError(path, no_key, 0,
                          "file is too short to be an SSTable (" + std::to_string(size) + " bytes, at least 48)");
    }
    if (load_fixed64(data + size - 8) != kTableMagic) {
        throw BundleError(path, no_key, size - 8, "not an SSTable (bad magic number): not a TensorFlow .index file");
    }
    Cursor footer(path, no_key, data, data + size - kFooterSize, data + size - 8);
    read_handle(footer, "metaindex handle");  // bundles keep no meta blocks
    BlockHandle index_handle = read_handle(footer, "index handle");

    Index index;
    bool have_header = false;
    std::string previous;
    Cursor index_block = read_block(path, no_key, data, size, index_handle, "index block");
    for_each_in_block(path, index_block, "index block", [&](const std::string&, Cursor value, uint64_t) {
        BlockHandle handle = read_handle(value, "data block handle");
        Cursor block = read_block(path, no_key, data, size, handle, "data block");
        for_each_in_block(path, block, "data block", [&](const std::string& key, Cursor entry_value, uint64_t at) {
            if (!have_header) {
                // tensor_bundle.cc kHeaderEntryKey: the empty key, first in byte order.
                if (!key.empty()) {
                    throw BundleError(path, key, at, "the first entry is not the bundle header (empty key)");
                }
                index.header = parse_header(entry_value);
                have_header = true;
                return;
            }
            if (key <= previous) {
                throw BundleError(path, key, at, "keys are not in strictly increasing order (previous key '" +
                                                     printable(previous) + "'): the .index file is corrupt");
            }
            previous = key;
            Entry entry;
            entry.key = key;
            entry.value_offset = entry_value.offset();
            parse_entry(Cursor(path, entry.key, data, entry_value.pos(), entry_value.pos() + entry_value.left()), entry);
            check_entry(path, index.header, entry);
            index.entries.push_back(std::move(entry));
        });
    });
    if (!have_header) throw BundleError(path, no_key, 0, "the table has no entries, not even the bundle header");
    return index;
}

Index read_index(const std::string& path) {
    MappedFile file(path);
    return parse_index(path, file.data(), static_cast<size_t>(file.size()));
}

std::vector<std::string> decode_strings(const uint8_t* data, size_t size, uint64_t count, uint32_t masked_crc,
                                        const std::string& where, const std::string& key, uint64_t base) {
    // Every length takes at least one byte, which bounds count before anything is allocated.
    if (count > size) {
        throw BundleError(where, key, base,
                          "string tensor of " + std::to_string(count) + " elements cannot fit in " +
                              std::to_string(size) + " bytes");
    }
    Cursor cursor(where, key, data, data, data + size, base);
    std::vector<uint64_t> lengths(count);
    uint32_t crc = 0;
    for (uint64_t& length : lengths) {
        length = cursor.varint64("string length");
        // tensor_bundle.cc WriteStringTensor: the CRCs cover each length as uint32 LE, or uint64 LE
        // above 2^32-1, not the varint bytes.
        if (length <= 0xffffffffull) {
            uint32_t small = static_cast<uint32_t>(length);
            crc = crc32c_extend(crc, reinterpret_cast<const uint8_t*>(&small), 4);
        } else {
            crc = crc32c_extend(crc, reinterpret_cast<const uint8_t*>(&length), 8);
        }
    }
    const uint8_t* stored_bytes = cursor.pos();
    uint32_t stored = crc32c_unmask(cursor.fixed32("string lengths checksum"));
    if (stored != crc) {
        cursor.fail("string lengths checksum mismatch (stored " + std::to_string(stored) + ", computed " +
                    std::to_string(crc) + "): the data shard is corrupt");
    }
    // The entry's crc32c continues over the 4 stored checksum bytes and then every string's bytes.
    crc = crc32c_extend(crc, stored_bytes, 4);
    std::vector<std::string> strings;
    strings.reserve(count);
    for (uint64_t length : lengths) {
        Cursor bytes = cursor.sub(length, "string");
        crc = crc32c_extend(crc, bytes.pos(), length);
        strings.emplace_back(reinterpret_cast<const char*>(bytes.pos()), length);
    }
    if (!cursor.done()) {
        cursor.fail(std::to_string(cursor.left()) + " bytes follow the last string; the entry's size is wrong");
    }
    if (crc != crc32c_unmask(masked_crc)) {
        throw BundleError(where, key, base,
                          "string tensor does not match its crc32c in the .index (stored " +
                              std::to_string(crc32c_unmask(masked_crc)) + ", computed " + std::to_string(crc) +
                              "): the data shard is corrupt");
    }
    return strings;
}

int64_t first_checksum_mismatch(const std::vector<std::shared_ptr<MappedFile>>& files,
                                const std::vector<ChecksumJob>& jobs, size_t num_threads) {
    for (size_t i = 0; i < jobs.size(); ++i) {
        const ChecksumJob& job = jobs[i];
        const MappedFile& file = file_at(files, job.file, "checksum job", i);
        if (job.offset > file.size() || job.nbytes > file.size() - job.offset) {
            throw BundleError(file.path(), "", job.offset,
                              "tensor of " + std::to_string(job.nbytes) + " bytes runs past the end of the file (" +
                                  std::to_string(file.size()) + " bytes)");
        }
    }
    PoolLease pool(num_threads);
    std::atomic<int64_t> first{-1};
    pool.run(jobs.size(), [&](size_t i, size_t) {
        const ChecksumJob& job = jobs[i];
        const MappedFile& file = *files[job.file];
        uint32_t actual = crc32c_extend(0, file.data() + job.offset, job.nbytes);
        if (actual == crc32c_unmask(job.masked_crc)) return;
        int64_t seen = first.load();
        while ((seen < 0 || static_cast<int64_t>(i) < seen) && !first.compare_exchange_weak(seen, static_cast<int64_t>(i))) {
        }
    });
    return first.load();
}

}  // namespace tfbundle
}  // namespace warpload
