"""Sharded checkpoints from the Hub load shard by shard while later shards download (shard_stream.py),
against olah behind the throttling front (tests/hub_server.py)."""
from __future__ import annotations

import hashlib
import os
import re
import sys

import pytest

pytest.importorskip("olah", reason="the hub tests serve repos with olah (pip install olah)")

import torch  # noqa: E402

from conftest import Terminal, mapping_of, needs_proc_maps  # noqa: E402
from hub_repos import SHARDED_REPO  # noqa: E402
from hub_server import Link, hub_fixture, hub_session_fixture  # noqa: E402,F401
from warpload import errors
from warpload.errors import ShapeMismatchError
from warpload.loading import progress_line
from warpload.loading.auto import AutoModelForCausalLM

# 6 MB through a 6 MB/s link: each <= 1 MB shard takes <= 0.17 s, the whole download ~1 s.
LINK_BYTES_PER_S = 6e6


def _local(hub) -> str:
    return os.fspath(hub.front.mirrors / "models" / SHARDED_REPO)


def _shard_count(hub) -> int:
    return len(list((hub.front.mirrors / "models" / SHARDED_REPO).glob("model-*.safetensors")))


def _cache_blobs(cache) -> list:
    return sorted((cache / f"models--{SHARDED_REPO.replace('/', '--')}" / "blobs").iterdir())


def _assert_same_model(model, reference) -> None:
    ours, theirs = model.state_dict(), reference.state_dict()
    assert ours.keys() == theirs.keys()
    for name, tensor in theirs.items():
        assert torch.equal(ours[name], tensor), name


def test_first_shard_loads_before_the_last_one_lands_and_matches_a_local_load(hub, tmp_path):
    hub.front.link = Link(LINK_BYTES_PER_S)
    model, info = AutoModelForCausalLM.from_pretrained(SHARDED_REPO, cache_dir=tmp_path, output_loading_info=True)
    shards = model.load_timings.shards
    assert len(shards) == _shard_count(hub)
    assert all(shard.landed_s <= shard.load_start_s <= shard.load_end_s for shard in shards)
    first_load = min(shard.load_start_s for shard in shards)
    last_landed = max(shard.landed_s for shard in shards)
    assert first_load < last_landed, shards
    reference, reference_info = AutoModelForCausalLM.from_pretrained(_local(hub), output_loading_info=True)
    assert reference.load_timings.shards == ()
    _assert_same_model(model, reference)
    assert info == reference_info


def test_transformers_backend_loads_shards_as_they_land_too(hub, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(SHARDED_REPO, cache_dir=tmp_path, backend="transformers")
    assert len(model.load_timings.shards) == _shard_count(hub)
    _assert_same_model(model, AutoModelForCausalLM.from_pretrained(_local(hub), backend="transformers"))


@pytest.mark.parametrize("overrides", [dict(n_layer=5), dict(n_layer=7)], ids=["unexpected", "missing"])
def test_key_sets_from_the_index_equal_a_local_load(hub, tmp_path, overrides):
    model, info = AutoModelForCausalLM.from_pretrained(SHARDED_REPO, cache_dir=tmp_path, output_loading_info=True,
                                                       **overrides)
    assert len(model.load_timings.shards) == _shard_count(hub)
    _, reference_info = AutoModelForCausalLM.from_pretrained(_local(hub), output_loading_info=True, **overrides)
    assert info == reference_info
    assert info["unexpected_keys"] or info["missing_keys"]


def test_shape_mismatch_found_mid_stream_raises_what_a_local_load_raises(hub, tmp_path):
    with pytest.raises(ShapeMismatchError) as local:
        AutoModelForCausalLM.from_pretrained(_local(hub), vocab_size=1999)
    with pytest.raises(ShapeMismatchError) as streamed:
        AutoModelForCausalLM.from_pretrained(SHARDED_REPO, cache_dir=tmp_path, vocab_size=1999)
    assert str(streamed.value) == str(local.value)
    # ignore_mismatched_sizes: the same keys initialised anew, everything else loaded.
    model, info = AutoModelForCausalLM.from_pretrained(SHARDED_REPO, cache_dir=tmp_path, vocab_size=1999,
                                                       ignore_mismatched_sizes=True, output_loading_info=True)
    reference, reference_info = AutoModelForCausalLM.from_pretrained(_local(hub), vocab_size=1999,
                                                                     ignore_mismatched_sizes=True,
                                                                     output_loading_info=True)
    assert info == reference_info and info["mismatched_keys"]
    mismatched = {key for key, _, _ in info["mismatched_keys"]} | {"lm_head.weight"}
    for name, tensor in reference.state_dict().items():
        if name not in mismatched:
            assert torch.equal(model.state_dict()[name], tensor), name


@needs_proc_maps
@pytest.mark.parametrize("zero_copy, mapped", [(None, True), (True, True), (False, False)],
                         ids=["auto", "required", "owned"])
def test_landed_shards_are_mapped_like_a_warm_cache_load(hub, tmp_path, zero_copy, mapped):
    hub.front.link = Link(LINK_BYTES_PER_S)
    model = AutoModelForCausalLM.from_pretrained(SHARDED_REPO, cache_dir=tmp_path, zero_copy=zero_copy)
    assert len(model.load_timings.shards) == _shard_count(hub)
    blobs = {os.fspath(blob) for blob in _cache_blobs(tmp_path)}
    backing = {mapping_of(parameter.data_ptr())[0] for parameter in model.parameters()}
    # Mapped: every parameter views a shard's blob in the cache, none was copied; owned: none does.
    assert (backing <= blobs) if mapped else not (backing & blobs), backing
    _assert_same_model(model, AutoModelForCausalLM.from_pretrained(_local(hub), zero_copy=False))


def test_olah_killed_mid_shard_then_restarted_resumes_and_ends_with_a_correct_model(hub, tmp_path):
    cut_at = 100_000
    hub.front.link = Link(LINK_BYTES_PER_S)
    hub.front.cut_after, hub.front.cuts_left = cut_at, 1
    killed: list[str] = []

    def kill_olah(path: str) -> None:
        hub.olah.process.kill()
        hub.olah.process.wait()
        killed.append(path)

    # The server dies after sending 100,000 bytes of one shard: huggingface_hub's retries (Range) find no
    # server, and the call ends with the download's typed error (no model, partly filled or not). Nothing
    # partial stays in the cache: huggingface_hub 2 writes each download to a temporary file of its own,
    # removed when it fails.
    hub.front.on_cut = kill_olah
    with pytest.raises(errors.HubError):
        AutoModelForCausalLM.from_pretrained(SHARDED_REPO, cache_dir=tmp_path)
    assert len(killed) == 1
    cut_shard = killed[0].rsplit("/", 1)[-1]
    assert not list(tmp_path.glob(f"models--*/snapshots/*/{cut_shard}"))
    assert not [blob.name for blob in _cache_blobs(tmp_path) if blob.name.endswith(".incomplete")]
    hub.front.on_cut = None
    hub.front.ranges.clear()
    hub.olah.start()
    model = AutoModelForCausalLM.from_pretrained(SHARDED_REPO, cache_dir=tmp_path)
    _assert_same_model(model, AutoModelForCausalLM.from_pretrained(_local(hub)))
    assert [path for path, _ in hub.front.ranges if path.endswith(cut_shard)], "the cut shard was fetched again"
    blobs = _cache_blobs(tmp_path)
    assert not [blob.name for blob in blobs if blob.name.endswith(".incomplete")]
    # olah serves plain git: every blob is named by its git blob id, so each must hash to its name.
    for blob in blobs:
        data = blob.read_bytes()
        assert hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest() == blob.name


def test_streamed_load_shows_its_progress_as_shards_land(hub, tmp_path, monkeypatch):
    monkeypatch.setattr(progress_line, "PROGRESS_MIN_BYTES", 0)
    monkeypatch.setattr(progress_line, "PROGRESS_AFTER_S", 0.0)
    monkeypatch.setattr(progress_line, "PROGRESS_REFRESH_S", 0.01)
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    monkeypatch.setattr(sys, "stderr", Terminal())
    hub.front.link = Link(LINK_BYTES_PER_S)
    model = AutoModelForCausalLM.from_pretrained(SHARDED_REPO, cache_dir=tmp_path)
    assert len(model.load_timings.shards) == _shard_count(hub)
    # huggingface_hub's download bars share the terminal; the loading line is the one rewritten with \r.
    percents = [int(p) for p in re.findall(r"\rLoading weights: \d+\.\d\d/\d+\.\d\d GB \((\d+)%\)",
                                           sys.stderr.getvalue())]
    assert percents == sorted(percents) and percents[-1] == 100
    assert any(0 < percent < 100 for percent in percents), percents  # seen between shards, not only at the end


def test_overlapped_load_writes_nothing_to_a_captured_stderr(hub, tmp_path, capfd, monkeypatch):
    # Thresholds off: only "stderr is not a terminal" keeps the line away.
    monkeypatch.setattr(progress_line, "PROGRESS_MIN_BYTES", 0)
    monkeypatch.setattr(progress_line, "PROGRESS_AFTER_S", 0.0)
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    AutoModelForCausalLM.from_pretrained(SHARDED_REPO, cache_dir=tmp_path)
    assert "Loading weights" not in capfd.readouterr().err
