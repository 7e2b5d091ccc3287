"""hub_hashes: the sha256 of an LFS download taken from the bytes huggingface_hub writes, against the test Hub."""
from __future__ import annotations

import hashlib
import io
import os

import pytest

pytest.importorskip("olah", reason="the hub tests serve repos with olah (pip install olah)")

import huggingface_hub  # noqa: E402

from hub_repos import MAIN_REPO  # noqa: E402
from hub_server import hub_fixture, hub_session_fixture  # noqa: E402,F401
from warpload.hub import hashes as hub_hashes
from warpload.hub import resolve as hub_module
from warpload.loading.auto import AutoModelForCausalLM


def _body(hub, name: str) -> bytes:
    return (hub.front.mirrors / "models" / MAIN_REPO / name).read_bytes()


def _download(tmp_path, name: str = "model.safetensors") -> tuple[str, dict[str, str]]:
    with hub_hashes.written_hashes() as written:
        path = huggingface_hub.hf_hub_download(MAIN_REPO, name, cache_dir=tmp_path)
    return os.path.realpath(path), written


def test_lfs_download_digest_is_the_sha256_of_the_committed_body(hub, tmp_path):
    blob, written = _download(tmp_path)
    assert written == {blob: hashlib.sha256(_body(hub, "model.safetensors")).hexdigest()}


def test_download_cut_and_resumed_is_hashed_whole(hub, tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "DOWNLOAD_CHUNK_SIZE", 16384)
    hub.front.cut_after = 50_000
    hub.front.cuts_left = 1
    blob, written = _download(tmp_path)
    assert [r for path, r in hub.front.ranges if path.endswith("/model.safetensors")] == [None, "bytes=49152-"]
    assert written == {blob: hashlib.sha256(_body(hub, "model.safetensors")).hexdigest()}


def test_corrupted_body_gives_a_digest_that_is_not_the_name(hub, tmp_path):
    hub.front.corrupt_left = 1
    blob, written = _download(tmp_path)
    assert written[blob] != os.path.basename(blob)
    with open(blob, "rb") as handle:
        assert written[blob] == hashlib.sha256(handle.read()).hexdigest()


def test_from_pretrained_checks_lfs_blobs_without_reading_them_back(hub, tmp_path, monkeypatch):
    opened = []

    def spy(path, *args, **kwargs):
        opened.append(os.path.basename(path))
        return open(path, *args, **kwargs)

    monkeypatch.setattr(hub_module, "open", spy, raising=False)
    AutoModelForCausalLM.from_pretrained(MAIN_REPO, cache_dir=tmp_path)
    lfs_blob = hashlib.sha256(_body(hub, "model.safetensors")).hexdigest()
    assert lfs_blob not in opened
    # config.json and generation_config.json are git blobs (sha1 names): those are still hashed from the file.
    assert [name for name in opened if len(name) == 40]


def test_git_blob_download_leaves_no_digest(hub, tmp_path):
    _, written = _download(tmp_path, "config.json")
    assert written == {}


def test_downloads_outside_written_hashes_are_untouched(hub, tmp_path):
    with hub_hashes.written_hashes() as written:
        pass
    path = huggingface_hub.hf_hub_download(MAIN_REPO, "model.safetensors", cache_dir=tmp_path)
    assert written == {} and os.path.getsize(path) == len(_body(hub, "model.safetensors"))


@pytest.mark.parametrize("move", [lambda f: f.seek(0), lambda f: f.truncate(0)], ids=["seek", "truncate"])
def test_moving_the_file_drops_the_digest(move):
    hashing = hub_hashes._HashingFile(io.BytesIO())
    hashing.write(b"abc")
    move(hashing)
    assert hashing.digest is None


def test_a_file_that_does_not_start_empty_gets_no_digest():
    handle = io.BytesIO(b"partial")
    handle.seek(0, io.SEEK_END)
    assert hub_hashes._HashingFile(handle).digest is None


@pytest.mark.parametrize("name, blob", [("/c/blobs/" + "a" * 64 + ".1a2b3c4d.incomplete", "a" * 64),
                                        ("/c/blobs/" + "a" * 64 + ".incomplete", "a" * 64),
                                        ("/c/blobs/" + "a" * 40 + ".incomplete", None),
                                        ("/c/blobs/" + "a" * 64, None)],
                         ids=["unique-temp", "plain-temp", "git-sha1", "no-suffix"])
def test_blob_of_temporary_names(name, blob):
    found = hub_hashes._blob_of(name)
    assert (found and os.path.basename(found)) == blob
