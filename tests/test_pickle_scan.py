"""The C++ pickle scan (csrc/pickle_scan.cpp) agrees with a plain Python model of it, and with pickletools."""
from __future__ import annotations

import pickle
import pickletools
from collections import OrderedDict

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from test_torchbin import Storage, dumps, tensor_v2
from warpload._native import core
from warpload.formats import torch_pickle

# The reference: what the scan must compute, written for clarity, not speed. Each opcode's effect on a
# stack that holds, per entry, how deeply tuples nest in it.
_PUSH_LENGTHS = {b"J": 5, b"K": 2, b"M": 3, b"G": 9, b"N": 1, b"\x88": 1, b"\x89": 1, b"]": 1, b"}": 1, b"\x8f": 1}


def reference_scan(data: bytes, limit: int) -> tuple[str, int, int, list[tuple[int, bytes, bytes]]]:
    """(status, position, memo index, GLOBALs before position), as core().scan_pickle returns them."""
    stack: list[int] = []
    marks: list[int] = []
    memo: dict[int, int] = {}
    found: list[tuple[int, bytes, bytes]] = []
    pos = 0

    def ended(status: str, memo_index: int = 0) -> tuple[str, int, int, list[tuple[int, bytes, bytes]]]:
        return status, pos, memo_index, found

    while pos < len(data):
        op = data[pos:pos + 1]
        length = 1
        if op in _PUSH_LENGTHS:
            length = _PUSH_LENGTHS[op]
            stack.append(0)
        elif op in (b"q", b"r", b"h", b"j"):
            length = 2 if op in (b"q", b"h") else 5
            if pos + length > len(data):
                return ended("truncated")
            index = int.from_bytes(data[pos + 1:pos + length], "little")
            if op in (b"q", b"r"):
                if index > pos:
                    return ended("memo index too large", index)
                if not stack:
                    return ended("missing operand")
                memo[index] = stack[-1]
            else:
                if index not in memo:
                    return ended("missing operand")
                stack.append(memo[index])
        elif op in (b"t", b"\x85", b"\x86", b"\x87"):
            if op == b"t":
                if not marks:
                    return ended("missing operand")
                start = marks.pop()
            else:
                start = len(stack) - (data[pos] - 0x84)
                if start < 0:
                    return ended("missing operand")
            depth = 1 + max(stack[start:], default=0)
            if depth > limit:
                return ended("tuples too deep")
            stack[start:] = [depth]
        elif op == b"(":
            marks.append(len(stack))
            if len(marks) > limit:
                return ended("marks too deep")
        elif op == b")":
            stack.append(1)
        elif op in (b"e", b"u"):
            if not marks:
                return ended("missing operand")
            del stack[marks.pop():]
        elif op in (b"R", b"\x81"):
            if len(stack) < 2:
                return ended("missing operand")
            stack[-2:] = [1]
        elif op in (b"a", b"b", b"s"):
            del stack[-(2 if op == b"s" else 1):]
        elif op == b"Q":
            if not stack:
                return ended("missing operand")
            stack[-1] = 0
        elif op in (b"X", b"U", b"\x8a"):
            size_bytes = 4 if op == b"X" else 1
            if pos + 1 + size_bytes > len(data):
                return ended("truncated")
            length = 1 + size_bytes + int.from_bytes(data[pos + 1:pos + 1 + size_bytes], "little")
            stack.append(0)
        elif op == b"c":
            lines = data[pos + 1:].split(b"\n", 2)
            if len(lines) < 3:
                return ended("truncated")
            found.append((pos, lines[0], lines[1]))
            length = 1 + len(lines[0]) + 1 + len(lines[1]) + 1
            stack.append(0)
        elif op == b"\x80":
            length = 2
        elif op == b".":
            pos += 1
            return ended("complete")
        else:
            return ended("forbidden opcode")
        if pos + length > len(data):
            return ended("truncated")
        pos += length
    return ended("truncated")


def scan(data: bytes, limit: int = 100) -> tuple[str, int, int, list[tuple[int, bytes, bytes]]]:
    return core().scan_pickle(data, limit)


def test_reference_knows_the_same_opcodes_as_the_scan():
    known = {op for op in _PUSH_LENGTHS} | {bytes([c]) for c in b"qrhjt\x85\x86\x87()euR\x81absQXU\x8ac\x80."}
    assert known == torch_pickle._OPCODES


def state_dict_pickle(count: int, shared: bool) -> bytes:
    state = OrderedDict()
    for i in range(count):
        key = "0" if shared else str(i)
        state[f"layer.{i}.weight"] = tensor_v2(Storage("storage", torch.FloatStorage, key, "cpu", 4), 0, (2, 2),
                                               (2, 1))
    return dumps(state)


@settings(max_examples=200, deadline=None)
@given(count=st.integers(0, 20), shared=st.booleans(), tail=st.binary(max_size=16))
def test_length_of_torch_pickles_is_where_pickletools_finds_stop(count, shared, tail):
    data = state_dict_pickle(count, shared)
    stop = [pos for opcode, _, pos in pickletools.genops(data) if opcode.name == "STOP"][0]
    status, length, _, globals_found = scan(data + tail)
    assert (status, length) == ("complete", stop + 1)
    names = {(module, name) for _, module, name in globals_found}
    assert (b"torch._utils", b"_rebuild_tensor_v2") in names or count == 0


@settings(max_examples=500, deadline=None)
@given(data=st.data(), count=st.integers(0, 6), limit=st.integers(1, 6))
def test_scan_matches_the_reference_on_mutated_pickles(data, count, limit):
    pkl = bytearray(state_dict_pickle(count, data.draw(st.booleans())))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(pkl)))
        action = data.draw(st.sampled_from(["set", "delete", "insert opcode"]))
        if action == "set" and at < len(pkl):
            pkl[at] = data.draw(st.integers(0, 255))
        elif action == "delete":
            del pkl[at:at + data.draw(st.integers(1, 8))]
        else:
            pkl[at:at] = data.draw(st.sampled_from(sorted(torch_pickle._OPCODES)))
    assert scan(bytes(pkl), limit) == reference_scan(bytes(pkl), limit)


# Opcodes with their arguments, drawn freely (half of them pushes, so sequences get past their first few
# opcodes): stack underflows, stray marks, deep tuples, memo misses.
_PIECES = st.one_of(
    st.sampled_from([b"N", b"K\x01", b"]", b"}", b")", b"X\x01\x00\x00\x00a", b"U\x00", b"cmodule\nname\n",
                     b"h\x00", b"j\x01\x00\x00\x00"]),
    st.sampled_from([b"(", b"t", b"\x85", b"\x86", b"\x87", b"e", b"u", b"R", b"a", b"b", b"s", b"Q", b"q\x00",
                     b"q\x03", b"r\x01\x00\x00\x00", b"\x80\x02", b".", b"\x93"]))


@settings(max_examples=1000, deadline=None)
@given(pieces=st.lists(_PIECES, max_size=60), limit=st.integers(1, 5), cut=st.integers(0, 8))
def test_scan_matches_the_reference_on_random_opcode_sequences(pieces, limit, cut):
    data = b"".join(pieces)
    data = data[:max(len(data) - cut, 0)]
    assert scan(data, limit) == reference_scan(data, limit)


@pytest.mark.parametrize("data, expected", [
    (b"\x80\x02Nr\xff\xff\xff\xff.", ("memo index too large", 3, 0xFFFFFFFF)),
    (b"\x80\x02" + b")" + b"\x85" * 200 + b".", ("tuples too deep", 102, 0)),
    (b"\x80\x02" + b"(" * 101, ("marks too deep", 102, 0)),
    (b"\x80\x02h\x05.", ("missing operand", 2, 0)),
    (b"\x80\x02\x86.", ("missing operand", 2, 0)),
    (b"\x80\x04\x95", ("forbidden opcode", 2, 0)),
    (b"\x80\x02X\xff\xff\xff\xff", ("truncated", 2, 0)),
    (pickle.dumps({"a": 1}, protocol=2), ("complete", len(pickle.dumps({"a": 1}, protocol=2)), 0)),
], ids=["huge memo index", "deep tuples", "deep marks", "memo miss", "stack underflow", "FRAME", "long string",
        "a dict"])
def test_scan_statuses(data, expected):
    assert scan(data)[:3] == expected


def test_nesting_limit_must_fit_the_scans_depth_bytes():
    with pytest.raises(ValueError, match="max_nesting"):
        scan(b".", 255)

