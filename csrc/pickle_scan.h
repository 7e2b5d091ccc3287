// pickle_scan.h — checks a weights-only pickle without running it: its length, opcodes, memo indices, nesting.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace warpload {

// How a scan ended. Every status but kComplete and kTruncated is a pickle to refuse.
enum class PickleScanStatus {
    kComplete,           // STOP found: position is the pickle's length
    kTruncated,          // the data ends before STOP (or inside an opcode's argument)
    kForbiddenOpcode,    // an opcode outside torch.load(weights_only=True)'s set
    kMissingOperand,     // an opcode finds the stack, the mark list or the memo without what it needs
    kMemoIndexTooLarge,  // a memo index beyond the byte it appears at: no writer produces one
    kTuplesTooDeep,      // tuples nest deeper than the limit
    kMarksTooDeep,       // open MARKs nest deeper than the limit
};

// A GLOBAL opcode at byte `offset`: its module and name are data[module_begin, module_end) and
// data[name_begin, name_end) (raw bytes, checked by the caller against its allow-list).
struct PickleGlobal {
    size_t offset;
    size_t module_begin, module_end;
    size_t name_begin, name_end;
};

struct PickleScan {
    PickleScanStatus status;
    size_t position;      // the length for kComplete, else the byte of the opcode that ended the scan (size
                          // when the data ends between opcodes)
    uint64_t memo_index;  // for kMemoIndexTooLarge
    std::vector<PickleGlobal> globals;  // every GLOBAL before `position`, in order
};

// The opcodes torch.load(weights_only=True) accepts (torch/_weights_only_unpickler.py), as bytes.
std::vector<uint8_t> weights_only_opcodes();

// Scans the pickle at the start of data[0, size), modelling the stack only as far as safety needs:
// for each entry, how deeply tuples nest in it. Nothing is allocated beyond O(size). max_nesting
// must be below 255 (depths are stored as bytes).
PickleScan scan_pickle(const uint8_t* data, size_t size, int max_nesting);

}  // namespace warpload
