"""warpload.hub and from_pretrained on repo ids, against olah serving git repos on 127.0.0.1 (tests/hub_server.py)."""
from __future__ import annotations

import os

import pytest

pytest.importorskip("olah", reason="the hub tests serve repos with olah (pip install olah)")

import huggingface_hub  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

import warpload  # noqa: E402
from hub_server import GATED_REPO, GATED_TOKEN, MAIN_REPO, REMOTE_CODE_REPO, hub, hub_session  # noqa: E402,F401
from warpload import errors  # noqa: E402
from warpload.models.auto import AutoModelForCausalLM  # noqa: E402
from warpload.models.config import AutoConfig  # noqa: E402


def assert_loaded(model, expected: dict) -> None:
    state = model.state_dict()
    for name, tensor in expected.items():
        if name in state:
            assert torch.equal(state[name].to(tensor.dtype), tensor), name


def test_repo_id_loads_main_safetensors_only(hub, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(MAIN_REPO, cache_dir=tmp_path)
    assert_loaded(model, hub.repos.states[(MAIN_REPO, "main")])
    fetched = [path.rsplit("/", 1)[-1] for path in hub.front.log.paths() if "/resolve/" in path]
    assert sorted(set(fetched)) == ["config.json", "generation_config.json", "model.safetensors"]
    assert model.config.name_or_path == MAIN_REPO
    assert model.generation_config.max_new_tokens == 7
