// tfbundle.h — TensorFlow tensor bundles without TensorFlow: the .index SSTable, its protos, string tensors, data CRCs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "errors.h"
#include "io.h"

namespace warpload {
namespace tfbundle {

// A malformed bundle: where it is (file, the entry's key when known, byte offset in the file).
// Becomes warpload.errors.TensorBundleError in Python.
class BundleError : public CheckpointError {
   public:
    BundleError(const std::string& path, const std::string& key, uint64_t offset, const std::string& what);
    const std::string& key() const { return key_; }

   private:
    std::string key_;
};

// BundleHeaderProto (formats.md 3.4); proto3, so absent fields are 0.
struct Header {
    int32_t num_shards = 0;
    int32_t endianness = 0;  // 0 little, 1 big
    int32_t producer = 0;
    int32_t min_consumer = 0;
    std::vector<int32_t> bad_consumers;
};

// TensorSliceProto.Extent: length -1 when absent (the whole dimension).
using Extent = std::pair<int64_t, int64_t>;

// BundleEntryProto, plus its key and where its value sits in the .index file.
struct Entry {
    std::string key;
    uint64_t value_offset = 0;
    int32_t dtype = 0;
    std::vector<int64_t> shape;
    bool unknown_rank = false;
    int32_t shard_id = 0;
    int64_t offset = 0;
    int64_t size = 0;
    uint32_t crc32c = 0;  // masked
    std::vector<std::vector<Extent>> slices;
};

struct Index {
    Header header;
    std::vector<Entry> entries;  // in key order, header entry excluded
};

// Parses a whole .index file: footer, block trailers (CRCs always checked), restart arrays, keys,
// protos. Throws BundleError for anything malformed, IOError if it cannot be read.
Index read_index(const std::string& path);
Index parse_index(const std::string& path, const uint8_t* data, size_t size);

// Decodes a DT_STRING tensor's stored bytes (formats.md 3.5): count varint lengths, a masked CRC of
// the lengths, then the strings; both that CRC and the entry's masked_crc (which covers the lengths,
// that CRC and the strings) are checked. `where`/`key`/`base` only label errors.
std::vector<std::string> decode_strings(const uint8_t* data, size_t size, uint64_t count, uint32_t masked_crc,
                                        const std::string& where, const std::string& key, uint64_t base);

// One tensor whose stored bytes must match a masked crc32c.
struct ChecksumJob {
    uint32_t file;
    uint64_t offset;
    uint64_t nbytes;
    uint32_t masked_crc;
};

// Checks every job, in parallel on num_threads threads (0: one per available core). Returns the index of the first job (lowest index)
// whose bytes do not match, or -1. Throws BundleError for a range outside its file.
int64_t first_checksum_mismatch(const std::vector<std::shared_ptr<MappedFile>>& files,
                                const std::vector<ChecksumJob>& jobs, size_t num_threads);

// A key made printable for messages: bytes outside printable ASCII become \xNN.
std::string printable(const std::string& key);

}  // namespace tfbundle
}  // namespace warpload
