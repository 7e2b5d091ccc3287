"""The weights-only unpickler: hostile pickles raise typed errors and run nothing; its allow-list is torch's."""
from __future__ import annotations

import gc
import os
import pickle
import subprocess
import sys
import zipfile
from collections import OrderedDict

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import warpload
from test_torchbin import (
    BIN_FIXTURES,
    Storage,
    dumps,
    tensor_v2,
    torch_reference,
    write_legacy_checkpoint,
    write_zip_checkpoint,
)
from torch_structures import assert_same_structure
from warpload.errors import CheckpointError, UnsafeCheckpointError, UnsupportedDtypeError
from warpload.formats import torch_objects, torch_pickle

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


class Evil:
    """Runs a shell command when unpickled, through __reduce__."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class EvilEval(Evil):
    def __reduce__(self):
        return eval, (f"__import__('os').system({self.command!r})",)


class Touch:
    """A class of this test module whose constructor creates a file: unpickling imports the module and calls it."""

    def __init__(self, path: str) -> None:
        open(path, "w").close()

    def __reduce__(self):
        return Touch, (self.path,)

    @classmethod
    def payload(cls, path: str) -> "Touch":
        instance = cls.__new__(cls)
        instance.path = path
        return instance


def payloads(marker: str) -> dict[str, bytes]:
    """Pickles that create the file `marker` when pickle.loads reads them."""
    command = f"touch {marker}"
    quoted = command.encode().replace(b"'", b"\\'")
    return {
        "os.system via GLOBAL + REDUCE": pickle.dumps(Evil(command), protocol=2),
        "builtins.eval": pickle.dumps(EvilEval(command), protocol=2),
        "a class with __reduce__": pickle.dumps(Touch.payload(marker), protocol=2),
        "INST opcode": b"(S'" + quoted + b"'\nios\nsystem\n.",
        "OBJ opcode": b"(cos\nsystem\nS'" + quoted + b"'\no.",
        "STACK_GLOBAL (protocol 4)": pickle.dumps(Evil(command), protocol=4),
        "a payload inside a state dict": dumps({"hook": Evil(command), "w": tensor_v2(
            Storage("storage", torch.FloatStorage, "0", "cpu", 1), 0, (1,), (1,))}),
    }


@pytest.mark.parametrize("name", list(payloads("x")))
def test_payloads_create_their_file_when_unpickled(tmp_path, name):
    """Without this, the tests below that find no file would prove nothing."""
    marker = tmp_path / "pwned"
    code = "import pickle, sys; pickle.loads(sys.stdin.buffer.read())"
    subprocess.run([sys.executable, "-c", code], input=payloads(marker)[name], capture_output=True,
                   cwd=os.path.dirname(__file__))
    assert marker.exists()


@pytest.mark.parametrize("name", list(payloads("x")))
@pytest.mark.parametrize("container", ["zip", "legacy"])
def test_hostile_pickles_are_refused_and_run_nothing(tmp_path, name, container):
    marker = tmp_path / "pwned"
    path = tmp_path / "model.bin"
    if container == "zip":
        write_zip_checkpoint(path, payloads(marker)[name], {"0": b"\x00" * 4})
    else:
        write_legacy_checkpoint(path, payloads(marker)[name], {"0": (1, b"\x00" * 4)})
    with pytest.raises(UnsafeCheckpointError, match="is not allowed") as raised:
        warpload.load_checkpoint(path)
    assert str(path) in str(raised.value)
    assert not marker.exists()


@pytest.mark.parametrize("legacy", [False, True])
def test_persistent_ids_other_than_storages_are_refused(tmp_path, legacy):
    state = dumps({"w": Storage("module", "x", "y", "z", 1, None)})
    path = tmp_path / "m.bin"
    if legacy:
        write_legacy_checkpoint(path, state, {})
    else:
        write_zip_checkpoint(path, state, {})
    with pytest.raises(UnsafeCheckpointError, match="persistent id of kind 'module'"):
        warpload.load_checkpoint(path)


@pytest.mark.parametrize("name", list(payloads("x")))
@pytest.mark.filterwarnings("ignore:Detected pickle protocol 4")
def test_torch_refuses_the_same_pickles(tmp_path, name):
    path = write_zip_checkpoint(tmp_path / "model.bin", payloads(tmp_path / "pwned")[name], {"0": b"\x00" * 4})
    with pytest.raises(pickle.UnpicklingError):
        torch_reference(path)


def test_refusal_names_the_global_and_its_byte_offset(tmp_path):
    path = write_zip_checkpoint(tmp_path / "m.bin", pickle.dumps(Evil("true"), protocol=2), {})
    with pytest.raises(UnsafeCheckpointError, match=r"data.pkl, byte 2: global 'posix.system' is not allowed"):
        warpload.load_checkpoint(path)


@pytest.mark.parametrize("data, match", [
    (b"\x80\x02ccollections\nOrderedDict\n)R}N\x86b.", "BUILD on a dict takes a dict"),
    (b"\x80\x02cbuiltins\nbytearray\nJ\x00\x00\x00\x7f\x85R.", "bytearray is allowed only"),
    (b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00aX\x05\x00\x00\x00rot13\x86R.", "only as \\(str, 'latin1'\\)"),
    (b"\x80\x02}X\x01\x00\x00\x00wctorch._utils\n_rebuild_tensor\n(K\x00K\x00))tRs.", "storage of type int"),
], ids=["BUILD with slot state", "bytearray of 2 GB", "a codec other than latin1", "rebuild on a non-storage"])
def test_allowed_globals_called_the_wrong_way_are_refused(tmp_path, data, match):
    path = write_zip_checkpoint(tmp_path / "m.bin", data, {})
    with pytest.raises(CheckpointError, match=match):
        warpload.load_checkpoint(path)


@pytest.mark.parametrize("name, data, match", [
    ("LONG_BINPUT 0xFFFFFFFF (a 64 GiB memo table)", b"\x80\x02Nr\xff\xff\xff\xff.", "memo index 4294967295"),
    ("tuples nested a million deep, hashed as a key", b"\x80\x02}" + b")" + b"\x85" * 10**6 + b"Ns.",
     "tuples nest deeper than 100"),
    ("MARKs nested past the limit", b"\x80\x02" + b"(" * 1000 + b"N" + b"t" * 1000 + b".", "nest deeper than 100"),
    ("a truncated pickle", dumps({"a": [1, 2, 3]})[:-3], "before its STOP"),
    ("a BINGET of nothing", b"\x80\x02h\x05.", "stack or memo"),
    ("a stack underflow", b"\x80\x02\x86.", "stack or memo"),
])
def test_malformed_pickles_are_checkpoint_errors(tmp_path, name, data, match):
    path = write_zip_checkpoint(tmp_path / "m.bin", data, {})
    with pytest.raises(CheckpointError, match=match):
        warpload.load_checkpoint(path)


def test_deeply_nested_lists_in_tensor_fields_are_checkpoint_errors(tmp_path):
    # _rebuild_tensor(storage, offset=[[[...]]] a million deep, (1,), (1,)): no MARK or tuple nesting, so the
    # scan lets it through; the record check must refuse it without recursing into it.
    depth = 10**6
    data = (b"\x80\x02}X\x01\x00\x00\x00wctorch._utils\n_rebuild_tensor\n("
            b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x01tQ"
            + b"]" * depth + b"a" * (depth - 1) + b"K\x01\x85K\x01\x85tRs.")
    path = write_zip_checkpoint(tmp_path / "m.bin", data, {"0": b"\x00" * 4})
    with pytest.raises(CheckpointError, match="storage offset of type list"):
        warpload.load_checkpoint(path)


def test_legacy_pickles_longer_than_the_limit_are_refused(tmp_path, monkeypatch):
    # The legacy reader finds where each pickle ends by scanning; it must stop at the limit, not read on.
    from warpload.formats import torch_legacy

    monkeypatch.setattr(torch_legacy, "TORCH_MAX_PICKLE_BYTES", 4096)
    state = {f"w{i}": tensor_v2(Storage("storage", torch.FloatStorage, "0", "cpu", 1, None), 0, (1,), (1,))
             for i in range(200)}
    path = write_legacy_checkpoint(tmp_path / "big.bin", dumps(state), {"0": (1, b"\x00" * 4)})
    with pytest.raises(CheckpointError, match="legacy pickle 4 .* does not end within 4096 bytes"):
        warpload.load_checkpoint(path)


def test_storage_ids_must_name_records_in_the_archive(tmp_path):
    for key in ("../../etc/passwd", "/data/0", "7"):
        state = {"w": tensor_v2(Storage("storage", torch.FloatStorage, key, "cpu", 1), 0, (1,), (1,))}
        path = write_zip_checkpoint(tmp_path / "m.bin", dumps(state), {"0": b"\x00" * 4})
        with pytest.raises(CheckpointError, match="no record archive/data/"):
            warpload.load_checkpoint(path)


def test_allow_list_is_torchs():
    from torch._weights_only_unpickler import _get_allowed_globals

    ours = set(torch_objects.SAFE_GLOBALS) | torch_objects.TORCH_ONLY_GLOBALS | torch_objects.TORCH_ONLY_DTYPES
    assert ours == set(_get_allowed_globals())
    assert not (set(torch_objects.SAFE_GLOBALS) & (torch_objects.TORCH_ONLY_GLOBALS | torch_objects.TORCH_ONLY_DTYPES))


def test_opcodes_are_torchs():
    import torch._weights_only_unpickler as reference

    torch_opcodes = {value for value in vars(reference).values() if isinstance(value, bytes) and len(value) == 1}
    assert set(torch_pickle._OPCODES) == torch_opcodes


def test_gc_state_is_restored_after_success_and_failure(tmp_path):
    good = BIN_FIXTURES / "pt_gpt2_from_h5_bin" / "pytorch_model.bin"
    bad = write_zip_checkpoint(tmp_path / "bad.bin", b"\x80\x02\x86.", {})
    for enabled in (True, False):
        (gc.enable if enabled else gc.disable)()
        try:
            warpload.load_checkpoint(good)
            with pytest.raises(CheckpointError):
                warpload.load_checkpoint(bad)
            assert gc.isenabled() == enabled
        finally:
            gc.enable()


def test_protocol_and_container_variants_torch_accepts_load_the_same(tmp_path):
    # Lists, sets, floats, bytes and nested dicts come back as torch.load(weights_only=True) gives them.
    extras = {"w": torch.ones(2), "extra": [1.5, {"k": {3, 4}}, b"raw", bytearray(b"x"), complex(1, 2), None]}
    torch.save(extras, tmp_path / "x.bin")
    assert_same_structure(warpload.load_checkpoint(tmp_path / "x.bin"), torch_reference(tmp_path / "x.bin"))


@pytest.fixture(scope="module")
def small_archive(tmp_path_factory):
    """A small state dict with shared, strided and 0-d tensors: its data.pkl and storage records."""
    base = torch.arange(12, dtype=torch.float32)
    state = OrderedDict(a=base.view(3, 4), b=base.view(3, 4).t(), c=base[5], d=torch.ones(2, dtype=torch.int64))
    path = tmp_path_factory.mktemp("small") / "small.bin"
    torch.save(state, path)
    with zipfile.ZipFile(path) as archive:
        return {name.split("/", 1)[1]: archive.read(name) for name in archive.namelist()}


@FUZZ
@given(data=st.data())
@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_mutated_pickles_raise_typed_errors_or_match_torch(tmp_path, small_archive, data):
    pkl = bytearray(small_archive["data.pkl"])
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(pkl) - 1))
        if data.draw(st.booleans()):
            pkl[at] = data.draw(st.integers(0, 255))
        else:
            del pkl[at:at + data.draw(st.integers(1, 8))]
    records = {name[5:]: value for name, value in small_archive.items() if name.startswith("data/")}
    path = write_zip_checkpoint(tmp_path / "fuzz.bin", bytes(pkl), records)
    try:
        loaded = warpload.load_checkpoint(path)
    except (CheckpointError, UnsupportedDtypeError):
        return
    assert_same_structure(loaded, torch_reference(path))
