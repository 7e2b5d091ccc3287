"""The git repositories the test Hub serves: tiny random GPT-2 models written by transformers, several commits,
branches and tags, a variant, a subfolder, a gated copy, a repo with `auto_map` remote code in two versions
and a repo whose `auto_map` names that repo's classes."""
from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import torch

from hub_lfs import track_lfs
from model_checkpoints import save_checkpoint, tiny_transformers_model

GATED_REPO = "org/gated"
GATED_TOKEN = "hf_gatedsecret"
REMOTE_CODE_REPO = "org/remote-code"
# Weights and config only; its auto_map names the classes in REMOTE_CODE_REPO ("org/remote-code--module.Class").
REMOTE_CODE_USER_REPO = "org/remote-code-user"
# The tag of REMOTE_CODE_REPO's first commit, whose code scales logits by 1 (main's code by 2).
OLD_CODE_TAG = "code-v1"
MAIN_REPO = "org/tiny-gpt2"
# Tokenizer files (Llama-style at main, a GPT-2-style one in a subfolder and at tag tok-v1) next to weights.
TOKENIZER_REPO = "org/tiny-tokenizer"
# Six shards of about 1 MB: the front's link sends 1 MiB pieces one after another, so paced shards land in turn.
SHARDED_REPO = "org/sharded-gpt2"
SHARDED_MODEL = dict(n_embd=128, n_layer=6, vocab_size=2000)
# A LoRA adapter of MAIN_REPO's main weights (adapter_config.json names MAIN_REPO as its base; no config.json).
ADAPTER_REPO = "org/tiny-gpt2-lora"

_GIT = ["git", "-c", "user.name=warpload", "-c", "user.email=warpload@example.com", "-c", "commit.gpgsign=false"]

REMOTE_CONFIG_CODE = '''
from transformers import GPT2Config


class TinyRemoteConfig(GPT2Config):
    model_type = "tiny-remote"

    def __init__(self, logit_scale={scale}, **kwargs):
        self.logit_scale = logit_scale
        super().__init__(**kwargs)
'''

REMOTE_MODEL_CODE = '''
from transformers import GPT2LMHeadModel

from .configuration_tiny import TinyRemoteConfig


class TinyRemoteForCausalLM(GPT2LMHeadModel):
    config_class = TinyRemoteConfig
    code_version = {version}

    def forward(self, *args, **kwargs):
        output = super().forward(*args, **kwargs)
        output.logits = output.logits * self.config.logit_scale
        return output
'''


def remote_code_files(version: int) -> dict[str, str]:
    """The Python files of REMOTE_CODE_REPO at code version 1 (tag code-v1) or 2 (main): the config's
    `logit_scale` defaults to the version, and modeling_tiny imports configuration_tiny relatively.
    train_tiny.py is imported by nothing, so a load never needs it."""
    return {"configuration_tiny.py": REMOTE_CONFIG_CODE.format(scale=float(version)),
            "modeling_tiny.py": REMOTE_MODEL_CODE.format(version=version),
            "train_tiny.py": "raise RuntimeError('not a module to import')\n"}


def _git(repo: Path, *args: str) -> str:
    return subprocess.run([*_GIT, *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def _commit(repo: Path, message: str) -> str:
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", message)
    return _git(repo, "rev-parse", "HEAD")


def _clear(repo: Path) -> None:
    for entry in repo.iterdir():
        if entry.name != ".git":
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


@dataclass
class HubRepos:
    """What the fixture committed: commits by name, and the state dict expected at each revision."""

    commits: dict[str, str] = field(default_factory=dict)
    states: dict[tuple[str, str], dict[str, torch.Tensor]] = field(default_factory=dict)
    # The folders the tokenizer repo's files were saved from, by revision ("main", "sub", "tok-v1").
    tokenizers: dict[str, Path] = field(default_factory=dict)


def _save(model: torch.nn.Module, folder: Path, fmt: str, dtype: torch.dtype = torch.float32) -> dict:
    save_checkpoint(model, folder, fmt, dtype)
    return {name: tensor.clone() for name, tensor in model.state_dict().items()}


def build_repos(mirrors: Path) -> HubRepos:
    """Creates the git repositories olah serves (mirrors/models/<org>/<name>)."""
    built = HubRepos()
    repo = mirrors / "models" / MAIN_REPO
    repo.mkdir(parents=True)
    _git(repo, "init", "-q", "-b", "main")
    # Weights as LFS, as on the Hub: the front serves them (sha256 ETags); the other repos stay plain git (olah).
    track_lfs(repo)
    # v1: one safetensors file.
    built.states[(MAIN_REPO, "v1")] = _save(tiny_transformers_model("gpt2", seed=0), repo, "safetensors")
    built.commits["v1"] = _commit(repo, "v1: safetensors")
    _git(repo, "tag", "v1")
    # main: safetensors next to .bin (never fetched), a fp16 variant, a subfolder, unrelated files.
    _clear(repo)
    model = tiny_transformers_model("gpt2", seed=1)
    _save(model, repo / "bin", "bin")
    (repo / "bin" / "pytorch_model.bin").rename(repo / "pytorch_model.bin")
    shutil.rmtree(repo / "bin")
    built.states[(MAIN_REPO, "main")] = _save(model, repo, "safetensors")
    (repo / "generation_config.json").write_text(json.dumps({"max_new_tokens": 7, "bos_token_id": 1}))
    (repo / "optimizer.pt").write_bytes(b"\0" * 1024)
    (repo / "README.md").write_text("tiny\n")
    variant = tiny_transformers_model("gpt2", seed=2)
    _save(variant, repo / "v", "safetensors", torch.float16)
    (repo / "v" / "model.safetensors").rename(repo / "model.fp16.safetensors")
    shutil.rmtree(repo / "v")
    built.states[(MAIN_REPO, "fp16")] = {k: v.clone() for k, v in variant.state_dict().items()}
    built.states[(MAIN_REPO, "sub")] = _save(tiny_transformers_model("gpt2", seed=3), repo / "sub", "safetensors")
    built.commits["main"] = _commit(repo, "main: safetensors, bin, variant, subfolder")
    # branch sharded: safetensors shards and an index; branch bin-only: pytorch_model.bin shards.
    for branch, fmt, seed in (("sharded", "safetensors-sharded", 4), ("bin-only", "bin-sharded", 5)):
        _git(repo, "checkout", "-q", "-b", branch, built.commits["main"])
        _clear(repo)
        built.states[(MAIN_REPO, branch)] = _save(tiny_transformers_model("gpt2", seed=seed), repo, fmt)
        built.commits[branch] = _commit(repo, branch)
    # branch broken-index: the index names a shard the commit lacks.
    _git(repo, "checkout", "-q", "-b", "broken-index", built.commits["sharded"])
    _git(repo, "rm", "-q", sorted(path.name for path in repo.glob("model-*.safetensors"))[-1])
    built.commits["broken-index"] = _commit(repo, "a shard lost")
    _git(repo, "checkout", "-q", "main")

    gated = mirrors / "models" / GATED_REPO
    gated.mkdir(parents=True)
    _git(gated, "init", "-q", "-b", "main")
    built.states[(GATED_REPO, "main")] = _save(tiny_transformers_model("gpt2", seed=6), gated, "safetensors")
    _commit(gated, "gated")

    _build_remote_code(mirrors, built)
    sharded = mirrors / "models" / SHARDED_REPO
    sharded.mkdir(parents=True)
    _git(sharded, "init", "-q", "-b", "main")
    model = tiny_transformers_model("gpt2", seed=8, **SHARDED_MODEL)
    model.save_pretrained(sharded, max_shard_size="1MB")
    built.states[(SHARDED_REPO, "main")] = {k: v.clone() for k, v in model.state_dict().items()}
    built.commits["sharded-main"] = _commit(sharded, "six shards")
    _build_adapter(mirrors, built)
    _build_tokenizer_repo(mirrors, built)
    return built


def _build_adapter(mirrors: Path, built: HubRepos) -> None:
    """ADAPTER_REPO: peft's save_pretrained of a LoRA on MAIN_REPO's c_attn layers, with non-zero B matrices."""
    from peft import LoraConfig, get_peft_model

    from model_checkpoints import load_state

    repo = mirrors / "models" / ADAPTER_REPO
    repo.mkdir(parents=True)
    _git(repo, "init", "-q", "-b", "main")
    base = tiny_transformers_model("gpt2")
    load_state(base, built.states[(MAIN_REPO, "main")])
    adapted = get_peft_model(base, LoraConfig(r=4, lora_alpha=16, target_modules=["c_attn"], fan_in_fan_out=True))
    torch.manual_seed(11)
    for name, parameter in adapted.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.2)
    adapted.save_pretrained(repo)
    config = json.loads((repo / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = MAIN_REPO
    (repo / "adapter_config.json").write_text(json.dumps(config))
    built.commits["adapter-main"] = _commit(repo, "lora")


def _build_tokenizer_repo(mirrors: Path, built: HubRepos) -> None:
    """TOKENIZER_REPO: tag tok-v1 holds a GPT-2-style tokenizer; main a Llama-style one with named chat templates,
    a GPT-2-style one under sub/, a config and weights (which a tokenizer load must not fetch)."""
    from tokenizer_files import save_tokenizer

    repo = mirrors / "models" / TOKENIZER_REPO
    repo.mkdir(parents=True)
    _git(repo, "init", "-q", "-b", "main")
    sources = mirrors.parent / "tokenizer-sources"
    built.tokenizers["tok-v1"] = save_tokenizer("gpt2", sources / "tok-v1", pad=False)
    shutil.copytree(built.tokenizers["tok-v1"], repo, dirs_exist_ok=True)
    built.commits["tok-v1"] = _commit(repo, "a GPT-2-style tokenizer")
    _git(repo, "tag", "tok-v1")
    _clear(repo)
    built.tokenizers["main"] = save_tokenizer("llama", sources / "main")
    built.tokenizers["sub"] = save_tokenizer("gpt2", sources / "sub")
    shutil.copytree(built.tokenizers["main"], repo, dirs_exist_ok=True)
    shutil.copytree(built.tokenizers["sub"], repo / "sub")
    _save(tiny_transformers_model("gpt2", seed=11), repo, "safetensors")
    built.commits["tok-main"] = _commit(repo, "Llama-style tokenizer, a subfolder, weights")


def _build_remote_code(mirrors: Path, built: HubRepos) -> None:
    """REMOTE_CODE_REPO: tag code-v1 then main, each with its own weights, config and code; and
    REMOTE_CODE_USER_REPO, whose auto_map points at REMOTE_CODE_REPO's classes."""
    remote = mirrors / "models" / REMOTE_CODE_REPO
    remote.mkdir(parents=True)
    _git(remote, "init", "-q", "-b", "main")
    auto_map = {"AutoConfig": "configuration_tiny.TinyRemoteConfig",
                "AutoModelForCausalLM": "modeling_tiny.TinyRemoteForCausalLM"}
    for version, revision, seed in ((1, OLD_CODE_TAG, 9), (2, "main", 7)):
        _clear(remote)
        built.states[(REMOTE_CODE_REPO, revision)] = _save(tiny_transformers_model("gpt2", seed=seed), remote,
                                                           "safetensors")
        _remote_config(remote, auto_map, label=revision)
        for name, text in remote_code_files(version).items():
            (remote / name).write_text(text)
        built.commits[f"remote-{revision}"] = _commit(remote, f"remote code version {version}")
    _git(remote, "tag", OLD_CODE_TAG, built.commits[f"remote-{OLD_CODE_TAG}"])

    user = mirrors / "models" / REMOTE_CODE_USER_REPO
    user.mkdir(parents=True)
    _git(user, "init", "-q", "-b", "main")
    built.states[(REMOTE_CODE_USER_REPO, "main")] = _save(tiny_transformers_model("gpt2", seed=10), user,
                                                          "safetensors")
    _remote_config(user, {key: f"{REMOTE_CODE_REPO}--{reference}" for key, reference in auto_map.items()},
                   label="user")
    built.commits["remote-user"] = _commit(user, "weights using org/remote-code's classes")


def _remote_config(repo: Path, auto_map: dict[str, str], label: str) -> None:
    config = json.loads((repo / "config.json").read_text())
    config.update(model_type="tiny-remote", architectures=["TinyRemoteForCausalLM"], auto_map=auto_map,
                  tiny_label=label)
    (repo / "config.json").write_text(json.dumps(config))
