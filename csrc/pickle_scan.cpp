// pickle_scan.cpp — the opcode-by-opcode scan behind warpload's weights-only unpickler (torch_pickle.py).
#include "pickle_scan.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <stdexcept>

namespace warpload {

namespace {

// What an opcode does to the stack, as the scan models it.
enum Kind : uint8_t {
    kForbidden = 0,
    kPush,         // pushes a value that holds no tuple
    kPut,          // memo[index] = top
    kGet,          // pushes memo[index]
    kMark,
    kTuple,        // pops to the last MARK, pushes a tuple
    kTupleN,       // pops 1-3 values, pushes a tuple
    kEmptyTuple,
    kPopMark,      // APPENDS / SETITEMS: pops to the last MARK
    kCall,         // REDUCE / NEWOBJ: pops the arguments, replaces the callable by its result
    kPop,          // APPEND / BUILD
    kPop2,         // SETITEM
    kPersistentId, // replaces the top by a storage
    kString,       // 4-byte length, then the text
    kShortString,  // 1-byte length, then the bytes
    kGlobal,       // module\nname\n
    kProto,
    kStop,
};

struct Opcode {
    Kind kind;
    uint8_t length;  // the opcode byte plus fixed argument bytes (for strings, before the text)
};

// torch.load(weights_only=True)'s opcodes: pickle protocol 2 as torch.save writes it.
constexpr std::array<std::pair<char, Opcode>, 34> kOpcodes = {{
    {'J', {kPush, 5}},  {'K', {kPush, 2}},  {'M', {kPush, 3}},  {'G', {kPush, 9}},
    {'N', {kPush, 1}},  {'\x88', {kPush, 1}}, {'\x89', {kPush, 1}},  // NONE, NEWTRUE, NEWFALSE
    {']', {kPush, 1}},  {'}', {kPush, 1}},  {'\x8f', {kPush, 1}},    // EMPTY_LIST, EMPTY_DICT, EMPTY_SET
    {'q', {kPut, 2}},   {'r', {kPut, 5}},   {'h', {kGet, 2}},   {'j', {kGet, 5}},
    {'(', {kMark, 1}},  {'t', {kTuple, 1}}, {'\x85', {kTupleN, 1}}, {'\x86', {kTupleN, 1}}, {'\x87', {kTupleN, 1}},
    {')', {kEmptyTuple, 1}}, {'e', {kPopMark, 1}}, {'u', {kPopMark, 1}},
    {'R', {kCall, 1}},  {'\x81', {kCall, 1}}, {'a', {kPop, 1}}, {'b', {kPop, 1}}, {'s', {kPop2, 1}},
    {'Q', {kPersistentId, 1}}, {'X', {kString, 5}}, {'U', {kShortString, 2}}, {'\x8a', {kShortString, 2}},
    {'c', {kGlobal, 1}}, {'\x80', {kProto, 2}}, {'.', {kStop, 1}},
}};

constexpr uint8_t kTuple1 = 0x85;  // TUPLE1..TUPLE3 are consecutive opcodes
constexpr uint8_t kNoMemo = 0xFF;  // a memo slot never written (depths are at most max_nesting < 255)

std::array<Opcode, 256> build_table() {
    std::array<Opcode, 256> table{};
    for (const auto& [code, opcode] : kOpcodes) table[static_cast<uint8_t>(code)] = opcode;
    return table;
}

const std::array<Opcode, 256> kTable = build_table();

uint32_t read_u32(const uint8_t* p) {
    return static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 | static_cast<uint32_t>(p[2]) << 16 |
           static_cast<uint32_t>(p[3]) << 24;
}

}  // namespace

std::vector<uint8_t> weights_only_opcodes() {
    std::vector<uint8_t> codes;
    for (int op = 0; op < 256; ++op) {
        if (kTable[op].kind != kForbidden) codes.push_back(static_cast<uint8_t>(op));
    }
    return codes;
}

PickleScan scan_pickle(const uint8_t* data, size_t size, int max_nesting) {
    if (max_nesting < 1 || max_nesting >= kNoMemo) throw std::invalid_argument("max_nesting must be in [1, 254]");
    const auto limit = static_cast<size_t>(max_nesting);
    PickleScan scan{PickleScanStatus::kTruncated, 0, 0, {}};
    std::vector<uint8_t> stack;    // per entry: how deeply tuples nest in it
    std::vector<size_t> marks;     // stack heights at each open MARK
    std::vector<uint8_t> memo;     // per index: the depth stored there, kNoMemo if none
    auto end_with = [&](PickleScanStatus status, size_t pos) {
        scan.status = status;
        scan.position = pos;
        return scan;
    };
    size_t pos = 0;
    while (pos < size) {
        const uint8_t op = data[pos];
        const Opcode opcode = kTable[op];
        size_t length = opcode.length;
        switch (opcode.kind) {
            case kPush:
                stack.push_back(0);
                break;
            case kPut: {
                if (pos + length > size) return end_with(PickleScanStatus::kTruncated, pos);
                const uint64_t index = length == 2 ? data[pos + 1] : read_u32(data + pos + 1);
                if (index > pos) {
                    scan.memo_index = index;
                    return end_with(PickleScanStatus::kMemoIndexTooLarge, pos);
                }
                if (stack.empty()) return end_with(PickleScanStatus::kMissingOperand, pos);
                if (index >= memo.size()) memo.resize(index + 1, kNoMemo);
                memo[index] = stack.back();
                break;
            }
            case kGet: {
                if (pos + length > size) return end_with(PickleScanStatus::kTruncated, pos);
                const uint64_t index = length == 2 ? data[pos + 1] : read_u32(data + pos + 1);
                if (index >= memo.size() || memo[index] == kNoMemo) {
                    return end_with(PickleScanStatus::kMissingOperand, pos);
                }
                stack.push_back(memo[index]);
                break;
            }
            case kTuple:
            case kTupleN: {
                size_t start;
                if (opcode.kind == kTupleN) {
                    const size_t count = static_cast<size_t>(op - kTuple1) + 1;
                    if (count > stack.size()) return end_with(PickleScanStatus::kMissingOperand, pos);
                    start = stack.size() - count;
                } else {
                    if (marks.empty()) return end_with(PickleScanStatus::kMissingOperand, pos);
                    start = marks.back();
                    marks.pop_back();
                }
                // A MARK above the current top (values popped since) leaves an empty tuple on top.
                size_t depth = 1;
                if (start < stack.size()) {
                    depth += *std::max_element(stack.begin() + static_cast<std::ptrdiff_t>(start), stack.end());
                    stack.resize(start);
                }
                if (depth > limit) return end_with(PickleScanStatus::kTuplesTooDeep, pos);
                stack.push_back(static_cast<uint8_t>(depth));
                break;
            }
            case kMark:
                marks.push_back(stack.size());
                if (marks.size() > limit) return end_with(PickleScanStatus::kMarksTooDeep, pos);
                break;
            case kString:
                if (pos + length > size) return end_with(PickleScanStatus::kTruncated, pos);
                length += read_u32(data + pos + 1);
                stack.push_back(0);
                break;
            case kCall:
                // A call's result (a tensor stand-in, a container, a number) holds no tuple deeper than 1.
                if (stack.size() < 2) return end_with(PickleScanStatus::kMissingOperand, pos);
                stack.pop_back();
                stack.back() = 1;
                break;
            case kPersistentId:
                if (stack.empty()) return end_with(PickleScanStatus::kMissingOperand, pos);
                stack.back() = 0;
                break;
            case kEmptyTuple:
                stack.push_back(1);
                break;
            case kPopMark:
                if (marks.empty()) return end_with(PickleScanStatus::kMissingOperand, pos);
                if (marks.back() < stack.size()) stack.resize(marks.back());
                marks.pop_back();
                break;
            case kPop:
            case kPop2:
                // Like Python's `del stack[-n:]`: popping more than the stack holds empties it.
                stack.resize(stack.size() - std::min<size_t>(stack.size(), opcode.kind == kPop ? 1 : 2));
                break;
            case kShortString:
                if (pos + length > size) return end_with(PickleScanStatus::kTruncated, pos);
                length += data[pos + 1];
                stack.push_back(0);
                break;
            case kGlobal: {
                const auto* module_end = static_cast<const uint8_t*>(std::memchr(data + pos + 1, '\n', size - pos - 1));
                if (module_end == nullptr) return end_with(PickleScanStatus::kTruncated, pos);
                const size_t module_stop = static_cast<size_t>(module_end - data);
                const auto* name_end =
                    static_cast<const uint8_t*>(std::memchr(module_end + 1, '\n', size - module_stop - 1));
                if (name_end == nullptr) return end_with(PickleScanStatus::kTruncated, pos);
                const size_t name_stop = static_cast<size_t>(name_end - data);
                scan.globals.push_back({pos, pos + 1, module_stop, module_stop + 1, name_stop});
                length = name_stop + 1 - pos;
                stack.push_back(0);
                break;
            }
            case kStop:
                return end_with(PickleScanStatus::kComplete, pos + 1);
            case kProto:
                break;
            case kForbidden:
                return end_with(PickleScanStatus::kForbiddenOpcode, pos);
        }
        if (length > size - pos) return end_with(PickleScanStatus::kTruncated, pos);  // an argument cut short
        pos += length;
    }
    return end_with(PickleScanStatus::kTruncated, pos);
}

}  // namespace warpload
