"""The zip layer of .bin files: offsets against torch's own reader, zip64, top folders, corrupt archives."""
from __future__ import annotations

import io
import struct
import zipfile
import zlib
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import warpload
from test_torchbin import BIN_FIXTURES, Storage, assert_same_as_torch, dumps, tensor_v2, torch_reference
from warpload.errors import CheckpointError, UnsupportedDtypeError, UnsupportedFormatError
from warpload.formats.checkpoint import checkpoint_records
from warpload.formats.zip_archive import ZipArchive

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def write_zip(path: Path, entries: list[tuple[str, bytes, int]], *, align: int = 64, zip64: bool = False,
              hole_before_last: int = 0, comment: bytes = b"") -> Path:
    """A zip written field by field: stored or deflated entries, data aligned the way torch pads it (a local
    extra field), optionally zip64 fields everywhere and a sparse hole before the last entry."""
    central = []
    with open(path, "wb") as out:
        for i, (name, data, method) in enumerate(entries):
            if hole_before_last and i == len(entries) - 1:
                out.seek(hole_before_last, io.SEEK_CUR)
            offset = out.tell()
            raw = data if method == zipfile.ZIP_STORED else zlib.compress(data)[2:-4]
            crc, encoded = zlib.crc32(data), name.encode()
            extra = struct.pack("<2H2Q", 1, 16, len(data), len(raw)) if zip64 else b""
            if align:
                pad = -(offset + 30 + len(encoded) + len(extra) + 4) % align
                extra += struct.pack("<2H", 0x4246, pad) + b"Z" * pad
            sizes = (0xFFFFFFFF, 0xFFFFFFFF) if zip64 else (len(raw), len(data))
            out.write(struct.pack("<4s5H3L2H", b"PK\x03\x04", 45, 0x800, method, 0, 0, crc, *sizes, len(encoded),
                                  len(extra)) + encoded + extra + raw)
            central.append((encoded, method, crc, len(raw), len(data), offset))
        cd_offset = out.tell()
        for encoded, method, crc, compressed, size, offset in central:
            fields, extra = (compressed, size, offset), b""
            if zip64:
                fields, extra = (0xFFFFFFFF,) * 3, struct.pack("<2H3Q", 1, 24, size, compressed, offset)
            out.write(struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 45, 45, 0x800, method, 0, 0, crc, fields[0],
                                  fields[1], len(encoded), len(extra), 0, 0, 0, 0, fields[2]) + encoded + extra)
        cd_size, count = out.tell() - cd_offset, len(central)
        if zip64:
            end64 = out.tell()
            out.write(struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, cd_size, cd_offset))
            out.write(struct.pack("<4sLQL", b"PK\x06\x07", 0, end64, 1))
            count, cd_size, cd_offset = 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF
        out.write(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, count, count, cd_size, cd_offset, len(comment)))
        out.write(comment)
    return path


def checkpoint_entries(folder: str = "archive", pickle_method: int = zipfile.ZIP_STORED):
    """Entries of a two-tensor checkpoint, and the state torch.load must return for it."""
    storages = [Storage("storage", torch.FloatStorage, str(k), "cpu", 3) for k in range(2)]
    state = {"a": tensor_v2(storages[0], 0, (3,), (1,)), "b": tensor_v2(storages[1], 1, (2,), (1,))}
    entries = [(f"{folder}/data.pkl", dumps(state), pickle_method), (f"{folder}/byteorder", b"little", 0),
               (f"{folder}/data/0", struct.pack("<3f", 1, 2, 3), 0), (f"{folder}/version", b"3\n", 0),
               (f"{folder}/data/1", struct.pack("<3f", 4, 5, 6), 0)]
    return entries, {"a": torch.tensor([1.0, 2, 3]), "b": torch.tensor([5.0, 6])}


def test_record_offsets_match_torchs_reader_and_are_64_byte_aligned(tmp_path):
    path = tmp_path / "pytorch_model-00001-of-00002.bin"
    torch.save({f"t{i}": torch.randn(i + 1) for i in range(40)}, path)
    reader = torch._C.PyTorchFileReader(str(path))
    with ZipArchive(str(path)) as archive:
        folder = "pytorch_model-00001-of-00002"
        assert set(archive.entries) == {f"{folder}/{name}" for name in reader.get_all_records()}
        for name in reader.get_all_records():
            offset = archive.data_offset(archive.entries[f"{folder}/{name}"])
            assert offset == reader.get_record_offset(name), name
            assert offset % 64 == 0, name


@pytest.mark.parametrize("folder", ["archive", "pytorch_model", "some.model-v2"])
def test_any_top_folder_name_is_found(tmp_path, folder):
    entries, expected = checkpoint_entries(folder)
    path = write_zip(tmp_path / "x.bin", entries)
    assert all(torch.equal(warpload.load_checkpoint(path)[k], v) for k, v in expected.items())


def test_torch_save_to_a_buffer_uses_the_archive_folder(tmp_path):
    buffer = io.BytesIO()
    torch.save({"w": torch.arange(5.0)}, buffer)
    path = tmp_path / "renamed.bin"
    path.write_bytes(buffer.getvalue())
    assert zipfile.ZipFile(path).namelist()[0].startswith("archive/")
    assert_same_as_torch(warpload.load_checkpoint(path), torch_reference(path))


@pytest.mark.parametrize("zip64", [False, True])
@pytest.mark.parametrize("align", [0, 64])
def test_zip64_fields_alignment_and_deflated_pickle_match_torch(tmp_path, zip64, align):
    entries, expected = checkpoint_entries(pickle_method=zipfile.ZIP_DEFLATED)
    path = write_zip(tmp_path / "z.bin", entries, zip64=zip64, align=align, comment=b"a comment")
    assert_same_as_torch(warpload.load_checkpoint(path), torch_reference(path))
    assert all(torch.equal(warpload.load_checkpoint(path)[k], v) for k, v in expected.items())


def test_records_past_4_gib_use_zip64_offsets(tmp_path):
    # A sparse file: 4.25 GiB long, a few KiB on disk; the last storage starts past 2**32.
    entries, expected = checkpoint_entries()
    path = write_zip(tmp_path / "big.bin", entries, zip64=True, hole_before_last=2**32 + 2**28)
    assert path.stat().st_size > 2**32
    with ZipArchive(str(path)) as archive:
        assert archive.data_offset(archive.entries["archive/data/1"]) > 2**32
    assert_same_as_torch(warpload.load_checkpoint(path), torch.load(path, weights_only=True, mmap=True))
    assert torch.equal(warpload.load_checkpoint(path, zero_copy=True)["b"], expected["b"])


def test_compressed_storage_records_are_refused(tmp_path):
    entries, _ = checkpoint_entries()
    entries[2] = (entries[2][0], entries[2][1], zipfile.ZIP_DEFLATED)
    with pytest.raises(warpload.errors.UnsupportedFormatError, match="data/0 is compressed.*torch.save"):
        warpload.load_checkpoint(write_zip(tmp_path / "c.bin", entries))


def local_header_tail(archive: bytes, name: bytes) -> bytes:
    """The 26 bytes after the signature of `name`'s local header: enough to find that header and no other."""
    at = archive.index(name)
    return archive[at - 26:at]


@pytest.mark.parametrize("damage, match", [
    (lambda b: b[:-10], "no zip end-of-central-directory"),
    (lambda b: b[:len(b) // 2], "no zip end-of-central-directory"),
    (lambda b: b.replace(b"PK\x01\x02", b"PK\x01\x03", 1), "bad central directory entry signature"),
    (lambda b: b.replace(b"PK\x03\x04" + local_header_tail(b, b"pytorch_model/data/0"),
                         b"PK\x03\x05" + local_header_tail(b, b"pytorch_model/data/0"), 1),
     "no local header"),
])
def test_damaged_archives_are_checkpoint_errors(tmp_path, damage, match):
    source = BIN_FIXTURES / "pt_gpt2_from_h5_bin" / "pytorch_model.bin"
    path = tmp_path / "damaged.bin"
    path.write_bytes(damage(source.read_bytes()))
    with pytest.raises(CheckpointError, match=match):
        warpload.load_checkpoint(path)


def test_oversized_pickle_is_refused_before_reading_it(tmp_path):
    entries, _ = checkpoint_entries()
    path = write_zip(tmp_path / "huge.bin", entries, zip64=True)
    data = bytearray(path.read_bytes())
    # Claim data.pkl is 1 TiB in the central directory's zip64 extra field (uncompressed size comes first).
    central = data.index(b"PK\x01\x02")
    extra = central + 46 + len("archive/data.pkl")
    data[extra + 4:extra + 12] = struct.pack("<Q", 2**40)
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="above the .*-byte limit"):
        warpload.load_checkpoint(path)


# Python's zipfile cuts names at a NUL byte (a legacy quirk), so names here have none.
names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",), exclude_characters="\x00"), min_size=1,
                max_size=12)


@FUZZ
@given(contents=st.lists(st.tuples(names, st.binary(max_size=300), st.sampled_from([0, 8])), min_size=1,
                         max_size=6, unique_by=lambda e: e[0]),
       zip64=st.booleans(), align=st.sampled_from([0, 1, 64, 4096]),
       # zipfile takes the last end-record signature even inside the comment; warpload does not.
       comment=st.binary(max_size=40).filter(lambda c: b"PK\x05\x06" not in c))
def test_random_archives_read_like_pythons_zipfile(tmp_path, contents, zip64, align, comment):
    path = write_zip(tmp_path / "r.zip", [(f"f/{name}", data, method) for name, data, method in contents],
                     zip64=zip64, align=align, comment=comment)
    with zipfile.ZipFile(path) as reference, ZipArchive(str(path)) as archive:
        assert list(archive.entries) == reference.namelist()
        for name, entry in archive.entries.items():
            assert archive.read(entry, limit=1000) == reference.read(name)
            if entry.method == 0:
                with open(path, "rb") as handle:
                    handle.seek(archive.data_offset(entry))
                    assert handle.read(entry.size) == reference.read(name)


def test_damage_to_a_record_warpload_skips_and_to_a_storage(tmp_path):
    """Found by the fuzz test below: torch refuses the damaged .format_version header, warpload does not
    read that record and returns the damaged storage as stored."""
    original = (BIN_FIXTURES / "pt_gpt2_from_h5_bin_sharded" / "pytorch_model-00004-of-00004.bin").read_bytes()
    damaged = bytearray(original)
    damaged[585:589] = b"\0\0\0\0"  # the local header of .format_version
    damaged[1085:1089] = b"\xff\xff\xff\xff"  # inside data/0
    (tmp_path / "damaged.bin").write_bytes(bytes(damaged))
    with pytest.raises(RuntimeError, match="format_version"):
        torch.load(tmp_path / "damaged.bin", weights_only=True, mmap=True)
    loaded = warpload.load_checkpoint(tmp_path / "damaged.bin")
    repaired = bytearray(original)
    repaired[1085:1089] = damaged[1085:1089]
    (tmp_path / "repaired.bin").write_bytes(bytes(repaired))
    assert_same_as_torch(loaded, torch.load(tmp_path / "repaired.bin", weights_only=True, mmap=True))


@FUZZ
@given(contents=st.lists(st.tuples(names, st.binary(max_size=300)), min_size=1, max_size=6, unique_by=lambda e: e[0]),
       align=st.sampled_from([0, 64]), damage=st.integers(0, 2000))
def test_local_headers_read_in_one_call_give_the_same_offsets_and_errors(tmp_path, contents, align, damage):
    path = write_zip(tmp_path / "r.zip", [(f"f/{name}", data, 0) for name, data in contents], zip64=False,
                     align=align, comment=b"")
    raw = bytearray(path.read_bytes())
    raw[damage % len(raw)] ^= 0xFF
    path.write_bytes(bytes(raw))

    def offsets(prefetch: bool) -> list:
        try:
            with ZipArchive(str(path)) as archive:
                if prefetch:
                    archive.read_local_headers(archive.entries.values())
                found = []
                for entry in archive.entries.values():
                    try:
                        found.append(archive.data_offset(entry))
                    except CheckpointError as err:
                        found.append(str(err))
                return found
        except (CheckpointError, UnsupportedFormatError) as err:
            return [type(err).__name__]

    assert offsets(True) == offsets(False)


@FUZZ
@given(data=st.data())
def test_corrupted_archives_raise_typed_errors_or_load_what_torch_loads(tmp_path, data):
    original = (BIN_FIXTURES / "pt_gpt2_from_h5_bin_sharded" / "pytorch_model-00004-of-00004.bin").read_bytes()
    damaged = bytearray(original)
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(damaged) - 1))
        damaged[at:at + 4] = data.draw(st.binary(min_size=4, max_size=4))
    damaged = damaged[:data.draw(st.integers(0, len(damaged)))] if data.draw(st.booleans()) else damaged
    path = tmp_path / "fuzz.bin"
    path.write_bytes(bytes(damaged))
    try:
        loaded = warpload.load_checkpoint(path)
    except (CheckpointError, UnsupportedDtypeError):
        return
    try:
        # mmap=True, like warpload, does not CRC-check storage records (only data.pkl).
        expected = torch.load(path, weights_only=True, mmap=True)
    except (RuntimeError, ValueError):
        # torch also reads records warpload has no use for (.storage_alignment, version): damage
        # there stops torch, not warpload. Then torch reads the original with only the damage to
        # the storages warpload read put back, and warpload must give what torch gives from that.
        repaired = bytearray(original)
        for record in checkpoint_records(str(path)):
            repaired[record.offset:record.offset + record.nbytes] = damaged[record.offset:record.offset + record.nbytes]
        (tmp_path / "repaired.bin").write_bytes(bytes(repaired))
        expected = torch.load(tmp_path / "repaired.bin", weights_only=True, mmap=True)
    assert_same_as_torch(loaded, expected)
