"""The test Hub's LFS files (tests/hub_lfs.py, served by the front in tests/hub_server.py) answer like the Hub's."""
from __future__ import annotations

import hashlib
import os

import pytest

pytest.importorskip("olah", reason="the hub tests serve repos with olah (pip install olah)")

import httpx2  # noqa: E402
import huggingface_hub  # noqa: E402

from hub_repos import MAIN_REPO  # noqa: E402
from hub_server import hub_fixture, hub_session_fixture  # noqa: E402,F401


def _committed(hub, name: str) -> bytes:
    return (hub.front.mirrors / "models" / MAIN_REPO / name).read_bytes()


def test_lfs_file_metadata_is_the_sha256_and_size_of_its_body(hub):
    body = _committed(hub, "model.safetensors")
    url = huggingface_hub.hf_hub_url(MAIN_REPO, "model.safetensors")
    metadata = huggingface_hub.get_hf_file_metadata(url)
    assert metadata.etag == hashlib.sha256(body).hexdigest()
    assert metadata.size == len(body)
    assert metadata.commit_hash == hub.repos.commits["main"]


def test_plain_file_keeps_its_git_blob_id_as_etag(hub):
    body = _committed(hub, "config.json")
    metadata = huggingface_hub.get_hf_file_metadata(huggingface_hub.hf_hub_url(MAIN_REPO, "config.json"))
    assert metadata.etag == hashlib.sha1(b"blob %d\0" % len(body) + body).hexdigest()


def test_lfs_download_is_cached_under_its_sha256_with_the_committed_bytes(hub, tmp_path):
    path = huggingface_hub.hf_hub_download(MAIN_REPO, "model.safetensors", cache_dir=tmp_path)
    body = _committed(hub, "model.safetensors")
    assert os.path.basename(os.path.realpath(path)) == hashlib.sha256(body).hexdigest()
    with open(path, "rb") as handle:
        assert handle.read() == body


@pytest.mark.parametrize("header, status, expected", [("bytes=100-", 206, slice(100, None)),
                                                      ("bytes=10-19", 206, slice(10, 20))])
def test_lfs_range_requests_answer_that_part(hub, header, status, expected):
    body = _committed(hub, "model.safetensors")
    response = httpx2.get(huggingface_hub.hf_hub_url(MAIN_REPO, "model.safetensors"), headers={"Range": header})
    assert response.status_code == status
    assert response.content == body[expected]
    assert response.headers["Content-Range"].endswith(f"/{len(body)}")


def test_lfs_range_past_the_end_is_refused(hub):
    size = len(_committed(hub, "model.safetensors"))
    response = httpx2.get(huggingface_hub.hf_hub_url(MAIN_REPO, "model.safetensors"),
                          headers={"Range": f"bytes={size}-"})
    assert response.status_code == 416
