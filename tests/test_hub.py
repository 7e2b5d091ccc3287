"""warpload.hub and from_pretrained on repo ids, against olah serving git repos on 127.0.0.1 (tests/hub_server.py)."""
from __future__ import annotations

import os

import pytest

pytest.importorskip("olah", reason="the hub tests serve repos with olah (pip install olah)")

import huggingface_hub  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

from hub_repos import GATED_REPO, GATED_TOKEN, MAIN_REPO, OLD_CODE_TAG, REMOTE_CODE_REPO, REMOTE_CODE_USER_REPO  # noqa: E402
from hub_server import hub_fixture, hub_session_fixture, proxy_fixture  # noqa: E402,F401
from warpload import errors  # noqa: E402
from warpload.hub import resolve as hub_module
from warpload.loading.auto import AutoConfig, AutoModelForCausalLM


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
    # One listing decides what exists: no probe per candidate file name.
    assert [path for path in hub.front.log.paths() if path.startswith("/api/models/")] == [
        f"/api/models/{MAIN_REPO}/revision/main"]
    assert model.config.name_or_path == MAIN_REPO
    assert model.generation_config.max_new_tokens == 7


def downloaded(hub) -> list[str]:
    """File names whose bodies the front served (GET on /resolve/)."""
    return sorted(path.rsplit("/", 1)[-1] for method, path, _ in hub.front.log.entries
                  if method == "GET" and "/resolve/" in path)


@pytest.mark.parametrize("revision", ["v1", "full-commit", "short-commit"])
def test_revision_tag_and_commits_load_that_commit(hub, tmp_path, revision):
    commit = hub.repos.commits["v1"]
    revision = {"full-commit": commit, "short-commit": commit[:7]}.get(revision, revision)
    model = AutoModelForCausalLM.from_pretrained(MAIN_REPO, revision=revision, cache_dir=tmp_path)
    assert_loaded(model, hub.repos.states[(MAIN_REPO, "v1")])
    snapshot = tmp_path / "models--org--tiny-gpt2" / "snapshots" / commit
    assert (snapshot / "model.safetensors").is_file()


def test_sharded_branch_fetches_index_and_every_shard(hub, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(MAIN_REPO, revision="sharded", cache_dir=tmp_path)
    assert_loaded(model, hub.repos.states[(MAIN_REPO, "sharded")])
    names = downloaded(hub)
    assert "model.safetensors.index.json" in names
    assert sum(name.startswith("model-0") for name in names) >= 2
    ref = tmp_path / "models--org--tiny-gpt2" / "refs" / "sharded"
    assert ref.read_text() == hub.repos.commits["sharded"]


def test_bin_only_branch_falls_back_to_bin_shards(hub, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(MAIN_REPO, revision="bin-only", cache_dir=tmp_path)
    assert_loaded(model, hub.repos.states[(MAIN_REPO, "bin-only")])
    assert "pytorch_model.bin.index.json" in downloaded(hub)


def test_use_safetensors_true_on_bin_only_repo_names_the_files(hub, tmp_path):
    with pytest.raises(errors.EntryNotFoundError, match="does not appear to have a file named model.safetensors or "
                       "model.safetensors.index.json .*It has: .*pytorch_model.bin.index.json"):
        AutoModelForCausalLM.from_pretrained(MAIN_REPO, revision="bin-only", use_safetensors=True, cache_dir=tmp_path)


def test_use_safetensors_false_fetches_bin_only(hub, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(MAIN_REPO, use_safetensors=False, cache_dir=tmp_path)
    assert_loaded(model, hub.repos.states[(MAIN_REPO, "main")])
    assert "pytorch_model.bin" in downloaded(hub)
    assert "model.safetensors" not in downloaded(hub)


def test_variant_and_subfolder(hub, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(MAIN_REPO, variant="fp16", cache_dir=tmp_path)
    assert_loaded(model, hub.repos.states[(MAIN_REPO, "fp16")])
    model = AutoModelForCausalLM.from_pretrained(MAIN_REPO, subfolder="sub", cache_dir=tmp_path)
    assert_loaded(model, hub.repos.states[(MAIN_REPO, "sub")])
    assert "sub%2Fmodel.safetensors" in " ".join(hub.front.log.paths()) or any(
        path.endswith("/sub/model.safetensors") for path in hub.front.log.paths())


def test_missing_variant_says_there_is_a_file_without_it(hub, tmp_path):
    with pytest.raises(errors.EntryNotFoundError, match="file without the variant bf16. Use `variant=None`"):
        AutoModelForCausalLM.from_pretrained(MAIN_REPO, variant="bf16", cache_dir=tmp_path)


def test_index_naming_a_missing_shard_names_it_before_downloading_shards(hub, tmp_path):
    with pytest.raises(errors.EntryNotFoundError, match=r"does not appear to have a file named "
                       r"model-000\d\d-of-000\d\d.safetensors. Checkout .*/tree/broken-index"):
        AutoModelForCausalLM.from_pretrained(MAIN_REPO, revision="broken-index", cache_dir=tmp_path)
    assert not any(name.startswith("model-0") for name in downloaded(hub))


def test_missing_subfolder_lists_nothing_and_names_config(hub, tmp_path):
    with pytest.raises(errors.EntryNotFoundError, match=r"does not appear to have a file named nope/config.json"):
        AutoModelForCausalLM.from_pretrained(MAIN_REPO, subfolder="nope", cache_dir=tmp_path)


def test_default_cache_is_hf_home(hub):
    AutoModelForCausalLM.from_pretrained(MAIN_REPO)
    assert (huggingface_hub.constants.HF_HUB_CACHE + "/models--org--tiny-gpt2/refs/main").endswith("main")
    assert os.path.isfile(os.path.join(huggingface_hub.constants.HF_HUB_CACHE, "models--org--tiny-gpt2", "refs",
                                       "main"))


def test_unknown_repo_and_revision_errors(hub, tmp_path):
    with pytest.raises(errors.RepositoryNotFoundError, match="org/nope is not a local folder and is not a valid "
                       "model identifier"):
        AutoModelForCausalLM.from_pretrained("org/nope", cache_dir=tmp_path)
    with pytest.raises(errors.RevisionNotFoundError, match="nobranch is not a valid git identifier"):
        AutoModelForCausalLM.from_pretrained(MAIN_REPO, revision="nobranch", cache_dir=tmp_path)
    with pytest.raises(OSError):
        AutoModelForCausalLM.from_pretrained("not a repo!", cache_dir=tmp_path)


def test_second_call_serves_cache_and_force_download_refetches(hub, tmp_path):
    AutoModelForCausalLM.from_pretrained(MAIN_REPO, cache_dir=tmp_path)
    hub.front.log.clear()
    AutoModelForCausalLM.from_pretrained(MAIN_REPO, cache_dir=tmp_path)
    assert downloaded(hub) == []
    AutoModelForCausalLM.from_pretrained(MAIN_REPO, cache_dir=tmp_path, force_download=True)
    assert downloaded(hub) == ["config.json", "generation_config.json", "model.safetensors"]


@pytest.mark.parametrize("offline", ["local_files_only", "HF_HUB_OFFLINE"])
def test_offline_loads_cache_without_requests_and_fails_clearly_when_not_cached(hub, tmp_path, monkeypatch, offline):
    kwargs = {"local_files_only": True} if offline == "local_files_only" else {}
    if offline == "HF_HUB_OFFLINE":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(errors.NotCachedError, match="couldn't find them in the cached files: org/tiny-gpt2 at "
                       "revision 'main' has no cached config.json"):
        AutoModelForCausalLM.from_pretrained(MAIN_REPO, cache_dir=tmp_path, **kwargs)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    AutoModelForCausalLM.from_pretrained(MAIN_REPO, revision="sharded", cache_dir=tmp_path)
    if offline == "HF_HUB_OFFLINE":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub.front.log.clear()
    model = AutoModelForCausalLM.from_pretrained(MAIN_REPO, revision="sharded", cache_dir=tmp_path, **kwargs)
    assert_loaded(model, hub.repos.states[(MAIN_REPO, "sharded")])
    assert hub.front.log.entries == []
    with pytest.raises(errors.NotCachedError, match="no cached model.fp16.safetensors"):
        AutoModelForCausalLM.from_pretrained(MAIN_REPO, revision="sharded", variant="fp16", cache_dir=tmp_path,
                                             **kwargs)


def test_force_download_with_local_files_only_is_rejected(hub, tmp_path):
    with pytest.raises(ValueError, match="Cannot pass 'force_download=True' and 'local_files_only=True'"):
        AutoModelForCausalLM.from_pretrained(MAIN_REPO, force_download=True, local_files_only=True)


def test_gated_repo_needs_token(hub, tmp_path):
    with pytest.raises(errors.GatedRepoError, match="pass `token=<your_token>`"):
        AutoModelForCausalLM.from_pretrained(GATED_REPO, cache_dir=tmp_path)
    with pytest.raises(errors.GatedRepoError):
        AutoModelForCausalLM.from_pretrained(GATED_REPO, cache_dir=tmp_path, token="hf_wrong")
    model = AutoModelForCausalLM.from_pretrained(GATED_REPO, cache_dir=tmp_path, token=GATED_TOKEN)
    assert_loaded(model, hub.repos.states[(GATED_REPO, "main")])
    assert {auth for _, _, auth in hub.front.log.entries} >= {f"Bearer {GATED_TOKEN}"}


def test_token_true_and_implicit_use_the_stored_login(hub, tmp_path):
    with pytest.raises(huggingface_hub.errors.LocalTokenNotFoundError):
        AutoModelForCausalLM.from_pretrained(GATED_REPO, cache_dir=tmp_path, token=True)
    os.makedirs(os.path.dirname(huggingface_hub.constants.HF_TOKEN_PATH), exist_ok=True)
    with open(huggingface_hub.constants.HF_TOKEN_PATH, "w") as handle:
        handle.write(GATED_TOKEN)
    AutoModelForCausalLM.from_pretrained(GATED_REPO, cache_dir=tmp_path, token=True)
    AutoModelForCausalLM.from_pretrained(GATED_REPO, cache_dir=tmp_path / "implicit")
    hub.front.log.clear()
    with pytest.raises(errors.GatedRepoError):
        AutoModelForCausalLM.from_pretrained(GATED_REPO, cache_dir=tmp_path / "none", token=False)
    assert {auth for _, _, auth in hub.front.log.entries} == {None}


def test_use_auth_token_warns_and_works_resume_download_warns(hub, tmp_path):
    with pytest.warns(FutureWarning, match="`use_auth_token` argument is deprecated"):
        AutoModelForCausalLM.from_pretrained(GATED_REPO, cache_dir=tmp_path, use_auth_token=GATED_TOKEN)
    with pytest.raises(ValueError, match="`token` and `use_auth_token` are both specified"), \
            pytest.warns(FutureWarning):
        AutoModelForCausalLM.from_pretrained(GATED_REPO, cache_dir=tmp_path, use_auth_token="a", token="b")
    with pytest.warns(FutureWarning, match="`resume_download` is deprecated"):
        model = AutoModelForCausalLM.from_pretrained(MAIN_REPO, cache_dir=tmp_path, resume_download=True)
    assert_loaded(model, hub.repos.states[(MAIN_REPO, "main")])


def test_auto_config_from_repo_with_overrides_and_unused(hub, tmp_path):
    config, unused = AutoConfig.from_pretrained(MAIN_REPO, revision="v1", cache_dir=tmp_path, n_layer=1, foo=2,
                                                return_unused_kwargs=True)
    assert config.n_layer == 1 and unused == {"foo": 2}
    assert downloaded(hub) == ["config.json"]


def test_proxies_route_this_call_only_and_local_files_only_sends_nothing(hub, proxy, tmp_path):
    import threading

    proxies = {"http": proxy.url}
    direct: list = []
    other = threading.Thread(target=lambda: direct.append(
        AutoModelForCausalLM.from_pretrained(MAIN_REPO, revision="v1", cache_dir=tmp_path / "direct")))
    other.start()
    model = AutoModelForCausalLM.from_pretrained(MAIN_REPO, revision="sharded", cache_dir=tmp_path, proxies=proxies)
    other.join()
    assert_loaded(model, hub.repos.states[(MAIN_REPO, "sharded")])
    through_proxy = proxy.log.paths()
    assert through_proxy and all(path.startswith(hub.endpoint) for path in through_proxy)
    assert any("model.safetensors.index.json" in path for path in through_proxy)
    assert any("/api/models/" in path for path in through_proxy)
    # The concurrent call without proxies went direct: none of its v1 requests passed the proxy.
    v1 = ("/v1", hub.repos.commits["v1"])
    assert not any(mark in path for path in through_proxy for mark in v1)
    assert any("/v1" in path for path in hub.front.log.paths())
    proxied = {path.removeprefix(hub.endpoint) for path in through_proxy}
    assert proxied == {path for path in hub.front.log.paths() if not any(mark in path for mark in v1)}
    proxy.log.clear()
    AutoModelForCausalLM.from_pretrained(MAIN_REPO, revision="sharded", cache_dir=tmp_path, proxies=proxies,
                                         local_files_only=True)
    assert proxy.log.entries == []


def test_dead_proxy_is_an_error_not_a_direct_connection(hub, tmp_path):
    from hub_server import free_port

    with pytest.raises(errors.HubError, match=r"through proxies \{'http'"):
        AutoModelForCausalLM.from_pretrained(MAIN_REPO, cache_dir=tmp_path,
                                             proxies={"http": f"127.0.0.1:{free_port()}"})
    assert hub.front.log.entries == []


def test_remote_code_needs_trust_remote_code(hub, tmp_path):
    for code_revision in (None, OLD_CODE_TAG):
        for trust_remote_code in (None, False):
            with pytest.raises(ValueError) as ours:
                AutoModelForCausalLM.from_pretrained(REMOTE_CODE_REPO, cache_dir=tmp_path, code_revision=code_revision,
                                                     trust_remote_code=trust_remote_code)
            with pytest.raises(ValueError) as theirs:
                transformers.AutoModelForCausalLM.from_pretrained(REMOTE_CODE_REPO, cache_dir=tmp_path / "t",
                                                                  code_revision=code_revision,
                                                                  trust_remote_code=trust_remote_code)
            assert str(ours.value) == str(theirs.value)
            assert f"The repository {REMOTE_CODE_REPO} contains custom code" in str(ours.value)
    with pytest.raises(ValueError, match=f"references custom code contained in {REMOTE_CODE_REPO}"):
        AutoModelForCausalLM.from_pretrained(REMOTE_CODE_USER_REPO, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        AutoConfig.from_pretrained(REMOTE_CODE_REPO, cache_dir=tmp_path)
    # Refused from config.json alone: no code, and no weights downloaded in vain (by either library).
    assert set(downloaded(hub)) == {"config.json"}
    model = AutoModelForCausalLM.from_pretrained(REMOTE_CODE_REPO, cache_dir=tmp_path, trust_remote_code=True,
                                                 code_revision="main")
    assert type(model).__name__ == "TinyRemoteForCausalLM"
    assert_loaded(model, hub.repos.states[(REMOTE_CODE_REPO, "main")])
    # The module and its relative import; train_tiny.py is imported by neither.
    assert [name for name in downloaded(hub) if name.endswith(".py")] == ["configuration_tiny.py", "modeling_tiny.py"]
    hub.front.log.clear()
    AutoModelForCausalLM.from_pretrained(REMOTE_CODE_REPO, cache_dir=tmp_path, trust_remote_code=True)
    assert downloaded(hub) == []
    AutoModelForCausalLM.from_pretrained(REMOTE_CODE_REPO, cache_dir=tmp_path, trust_remote_code=True,
                                         code_revision=OLD_CODE_TAG, force_download=True)
    assert [name for name in downloaded(hub) if name.endswith(".py")] == ["configuration_tiny.py", "modeling_tiny.py"]


def remote_logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([[1, 5, 9, 2]])).logits


def assert_same_remote_model(ours, theirs) -> None:
    """Same class and config class source, same config and logits as transformers' own load."""
    import inspect

    for mine, reference in ((type(ours), type(theirs)), (type(ours.config), type(theirs.config))):
        assert mine.__name__ == reference.__name__
        assert inspect.getsource(mine) == inspect.getsource(reference)
    assert ours.config.logit_scale == theirs.config.logit_scale
    assert ours.config.tiny_label == theirs.config.tiny_label
    assert torch.equal(remote_logits(ours), remote_logits(theirs))


@pytest.mark.parametrize("revision, code_revision, weights_at, code_version", [
    ("main", OLD_CODE_TAG, "main", 1),
    ("main", "code-commit", "main", 1),
    (OLD_CODE_TAG, "main", OLD_CODE_TAG, 2),
    ("main", None, "main", 2),
    ("main", "main", "main", 2),
    (OLD_CODE_TAG, None, OLD_CODE_TAG, 1),
])
def test_code_revision_takes_code_from_its_commit_config_and_weights_from_revision(
        hub, tmp_path, revision, code_revision, weights_at, code_version):
    code_commit = hub.repos.commits[f"remote-{OLD_CODE_TAG}"]
    code_revision = code_commit if code_revision == "code-commit" else code_revision
    kwargs = dict(revision=revision, code_revision=code_revision, trust_remote_code=True)
    ours = AutoModelForCausalLM.from_pretrained(REMOTE_CODE_REPO, cache_dir=tmp_path, **kwargs)
    assert type(ours).code_version == code_version
    # The config class's default from the code revision, the config file's values from `revision`.
    assert ours.config.logit_scale == float(code_version)
    assert ours.config.tiny_label == weights_at
    assert_loaded(ours, hub.repos.states[(REMOTE_CODE_REPO, weights_at)])
    # The code lands in the snapshot of its own commit, in the shared cache.
    code_at = hub.repos.commits["remote-main" if code_version == 2 else f"remote-{OLD_CODE_TAG}"]
    snapshot = tmp_path / "models--org--remote-code" / "snapshots" / code_at
    assert sorted(path.name for path in snapshot.glob("*.py")) == ["configuration_tiny.py", "modeling_tiny.py"]
    theirs = transformers.AutoModelForCausalLM.from_pretrained(REMOTE_CODE_REPO, cache_dir=tmp_path / "t", **kwargs)
    assert_same_remote_model(ours, theirs)


def test_class_reference_to_another_repo_fetches_it_at_code_revision(hub, proxy, tmp_path):
    proxies = {"http": proxy.url}
    for code_revision, code_version in ((OLD_CODE_TAG, 1), (None, 2)):
        proxy.log.clear()
        kwargs = dict(code_revision=code_revision, trust_remote_code=True)
        ours = AutoModelForCausalLM.from_pretrained(REMOTE_CODE_USER_REPO, cache_dir=tmp_path, proxies=proxies,
                                                    **kwargs)
        assert type(ours).code_version == code_version and ours.config.tiny_label == "user"
        assert_loaded(ours, hub.repos.states[(REMOTE_CODE_USER_REPO, "main")])
        # Through this call's proxies, from org/remote-code at the code revision (its default branch without one).
        assert f"/{REMOTE_CODE_REPO}/resolve/{code_revision or 'main'}/configuration_tiny.py" in " ".join(
            proxy.log.paths())
        theirs = transformers.AutoModelForCausalLM.from_pretrained(REMOTE_CODE_USER_REPO, cache_dir=tmp_path / "t",
                                                                   **kwargs)
        assert_same_remote_model(ours, theirs)
    code_snapshot = tmp_path / "models--org--remote-code" / "snapshots" / hub.repos.commits[f"remote-{OLD_CODE_TAG}"]
    assert (code_snapshot / "modeling_tiny.py").is_file()
    user_snapshot = tmp_path / "models--org--remote-code-user" / "snapshots" / hub.repos.commits["remote-user"]
    assert not list(user_snapshot.glob("*.py"))


def test_local_folder_keeps_its_own_code_and_fetches_another_repos_at_code_revision(hub, tmp_path):
    import shutil

    kwargs = dict(trust_remote_code=True, cache_dir=tmp_path)
    AutoModelForCausalLM.from_pretrained(REMOTE_CODE_REPO, revision=OLD_CODE_TAG, **kwargs)
    AutoModelForCausalLM.from_pretrained(REMOTE_CODE_USER_REPO, **kwargs)
    snapshots = {repo: tmp_path / f"models--{repo.replace('/', '--')}" / "snapshots" / hub.repos.commits[commit]
                 for repo, commit in ((REMOTE_CODE_REPO, f"remote-{OLD_CODE_TAG}"), (REMOTE_CODE_USER_REPO,
                                                                                    "remote-user"))}
    # A folder's own modules are its code whatever code_revision says; another repo's come from the Hub.
    for repo, code_revision in ((REMOTE_CODE_REPO, "main"), (REMOTE_CODE_USER_REPO, OLD_CODE_TAG)):
        folder = shutil.copytree(snapshots[repo], tmp_path / repo.replace("/", "_"))
        ours = AutoModelForCausalLM.from_pretrained(folder, code_revision=code_revision, **kwargs)
        assert type(ours).code_version == 1
        theirs = transformers.AutoModelForCausalLM.from_pretrained(folder, code_revision=code_revision,
                                                                   trust_remote_code=True, cache_dir=tmp_path / "t")
        assert_same_remote_model(ours, theirs)


def test_unknown_code_revision_is_named(hub, tmp_path):
    with pytest.raises(errors.RevisionNotFoundError, match="code-v9 is not a valid git identifier") as caught:
        AutoModelForCausalLM.from_pretrained(REMOTE_CODE_REPO, code_revision="code-v9", trust_remote_code=True,
                                             cache_dir=tmp_path)
    assert (caught.value.repo_id, caught.value.revision) == (REMOTE_CODE_REPO, "code-v9")


@pytest.mark.parametrize("offline", ["local_files_only", "HF_HUB_OFFLINE"])
def test_remote_code_offline_after_online_and_not_cached(hub, tmp_path, monkeypatch, offline):
    kwargs = dict(trust_remote_code=True, cache_dir=tmp_path)
    online = AutoModelForCausalLM.from_pretrained(REMOTE_CODE_REPO, code_revision=OLD_CODE_TAG, **kwargs)
    AutoModelForCausalLM.from_pretrained(REMOTE_CODE_USER_REPO, code_revision=OLD_CODE_TAG, **kwargs)
    if offline == "HF_HUB_OFFLINE":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        kwargs["local_files_only"] = True
    hub.front.log.clear()
    model = AutoModelForCausalLM.from_pretrained(REMOTE_CODE_REPO, code_revision=OLD_CODE_TAG, **kwargs)
    assert type(model).code_version == 1 and model.config.tiny_label == "main"
    assert torch.equal(remote_logits(model), remote_logits(online))
    user = AutoModelForCausalLM.from_pretrained(REMOTE_CODE_USER_REPO, code_revision=OLD_CODE_TAG, **kwargs)
    assert type(user).code_version == 1
    assert hub.front.log.entries == []
    # main's code was never fetched: neither at the weights' commit nor for the other repo's default branch.
    with pytest.raises(errors.NotCachedError, match="org/remote-code at revision 'main' has no cached "
                       "configuration_tiny.py"):
        AutoModelForCausalLM.from_pretrained(REMOTE_CODE_REPO, **kwargs)
    with pytest.raises(errors.NotCachedError, match="org/remote-code at revision 'main' has no cached "
                       "configuration_tiny.py"):
        AutoModelForCausalLM.from_pretrained(REMOTE_CODE_USER_REPO, **kwargs)
    assert hub.front.log.entries == []


def test_auto_config_code_revision_like_transformers(hub, tmp_path):
    kwargs = dict(code_revision=OLD_CODE_TAG, trust_remote_code=True)
    config, unused = AutoConfig.from_pretrained(REMOTE_CODE_REPO, cache_dir=tmp_path, n_layer=1, foo=2,
                                                return_unused_kwargs=True, **kwargs)
    assert downloaded(hub) == ["config.json", "configuration_tiny.py"]
    theirs = transformers.AutoConfig.from_pretrained(REMOTE_CODE_REPO, cache_dir=tmp_path / "t", n_layer=1, **kwargs)
    assert type(config).__name__ == "TinyRemoteConfig" and config.logit_scale == 1.0 and unused == {"foo": 2}
    assert config.n_layer == 1 and config.tiny_label == "main"
    assert {**config.to_dict(), "_name_or_path": ""} == {**theirs.to_dict(), "_name_or_path": ""}
    assert AutoConfig.from_pretrained(REMOTE_CODE_REPO, cache_dir=tmp_path, trust_remote_code=True).logit_scale == 2.0


def test_cache_is_shared_with_huggingface_hub_and_transformers(hub, tmp_path):
    AutoModelForCausalLM.from_pretrained(MAIN_REPO, cache_dir=tmp_path)
    hub.front.log.clear()
    path = huggingface_hub.hf_hub_download(MAIN_REPO, "model.safetensors", cache_dir=tmp_path, local_files_only=True)
    assert os.path.islink(path)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(MAIN_REPO, cache_dir=tmp_path, local_files_only=True)
    assert_loaded(theirs, hub.repos.states[(MAIN_REPO, "main")])
    # With peft installed (a test dependency), transformers' Auto class probes the Hub for adapter_config.json
    # even under local_files_only; nothing else is asked for.
    assert [entry for entry in hub.front.log.entries if not entry[1].endswith("/adapter_config.json")] == []
    # And the other way: transformers downloads, warpload loads offline.
    transformers.AutoModelForCausalLM.from_pretrained(MAIN_REPO, revision="sharded", cache_dir=tmp_path / "t")
    ours = AutoModelForCausalLM.from_pretrained(MAIN_REPO, revision="sharded", cache_dir=tmp_path / "t",
                                                local_files_only=True)
    assert_loaded(ours, hub.repos.states[(MAIN_REPO, "sharded")])


def _blobs(cache) -> list[str]:
    return sorted(os.listdir(cache / "models--org--tiny-gpt2" / "blobs"))


def test_download_cut_mid_file_is_resumed_and_leaves_no_partial_blob(hub, tmp_path, monkeypatch):
    # huggingface_hub writes what it read in 10 MB chunks; smaller chunks let a 450 kB file resume mid-way.
    monkeypatch.setattr(huggingface_hub.constants, "DOWNLOAD_CHUNK_SIZE", 16384)
    hub.front.cut_after = 50_000
    hub.front.cuts_left = 1
    model = AutoModelForCausalLM.from_pretrained(MAIN_REPO, cache_dir=tmp_path)
    assert_loaded(model, hub.repos.states[(MAIN_REPO, "main")])
    assert hub.front.cuts_left == 0
    assert not [name for name in _blobs(tmp_path) if name.endswith(".incomplete")]
    ranged = [entry for entry in hub.front.ranges if "model.safetensors" in entry[0]]
    assert [r for _, r in ranged] == [None, "bytes=49152-"], ranged


def test_server_dying_every_time_fails_then_a_later_call_completes(hub, tmp_path):
    hub.front.cut_after = 50_000
    hub.front.cuts_left = 1000
    with pytest.raises(OSError):
        AutoModelForCausalLM.from_pretrained(MAIN_REPO, cache_dir=tmp_path)
    # Only an .incomplete file may remain, never a blob under its final name.
    snapshot_files = list((tmp_path / "models--org--tiny-gpt2" / "snapshots").rglob("model.safetensors"))
    assert snapshot_files == []
    hub.front.cuts_left = 0
    model = AutoModelForCausalLM.from_pretrained(MAIN_REPO, cache_dir=tmp_path)
    assert_loaded(model, hub.repos.states[(MAIN_REPO, "main")])
    assert not [name for name in _blobs(tmp_path) if name.endswith(".incomplete")]


def test_two_processes_loading_one_repo_leave_one_correct_cache(hub, tmp_path):
    import subprocess
    import sys

    script = ("import sys, torch; from warpload.loading.auto import AutoModelForCausalLM as A; "
              "m = A.from_pretrained(sys.argv[1], revision='sharded', cache_dir=sys.argv[2]); "
              "torch.save(m.state_dict(), sys.argv[3])")
    env = {**os.environ, "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    runs = [subprocess.Popen([sys.executable, "-c", script, MAIN_REPO, os.fspath(tmp_path / "cache"),
                              os.fspath(tmp_path / f"state{index}.pt")], env=env, stderr=subprocess.PIPE)
            for index in range(2)]
    for run in runs:
        assert run.wait(120) == 0, run.stderr.read().decode()[-2000:]
    for index in range(2):
        state = torch.load(tmp_path / f"state{index}.pt")
        for name, tensor in hub.repos.states[(MAIN_REPO, "sharded")].items():
            if name in state:
                assert torch.equal(state[name], tensor), name
    blobs = _blobs(tmp_path / "cache")
    assert not [name for name in blobs if name.endswith(".incomplete")]
    snapshot = tmp_path / "cache" / "models--org--tiny-gpt2" / "snapshots" / hub.repos.commits["sharded"]
    assert len(blobs) == len(list(snapshot.iterdir()))


@pytest.mark.parametrize("key", ["http", "http://127.0.0.1", "all", "all://127.0.0.1"])
def test_proxies_keys_match_like_requests(hub, proxy, tmp_path, key):
    AutoConfig.from_pretrained(MAIN_REPO, cache_dir=tmp_path, proxies={key: proxy.url.removeprefix("http://")})
    assert proxy.log.paths() and len(proxy.log.paths()) == len(hub.front.log.paths())


def test_proxies_for_another_scheme_leave_requests_direct(hub, proxy, tmp_path):
    AutoConfig.from_pretrained(MAIN_REPO, cache_dir=tmp_path, proxies={"https": proxy.url})
    assert proxy.log.entries == [] and hub.front.log.entries


def test_corrupted_body_of_the_right_size_is_refetched_then_refused(hub, tmp_path):
    hub.front.corrupt_left = 1
    model = AutoModelForCausalLM.from_pretrained(MAIN_REPO, cache_dir=tmp_path)
    assert_loaded(model, hub.repos.states[(MAIN_REPO, "main")])
    assert downloaded(hub).count("model.safetensors") == 2
    hub.front.corrupt_left = 2
    with pytest.raises(errors.HubError, match="model.safetensors of org/tiny-gpt2 at revision 'v1' arrived twice "
                       "with content that does not match its hash"):
        AutoModelForCausalLM.from_pretrained(MAIN_REPO, revision="v1", cache_dir=tmp_path / "bad")
    snapshot = tmp_path / "bad" / "models--org--tiny-gpt2" / "snapshots" / hub.repos.commits["v1"]
    assert sorted(path.name for path in snapshot.iterdir()) == ["config.json", "generation_config.json"]
    blobs = tmp_path / "bad" / "models--org--tiny-gpt2" / "blobs"
    assert len(_blobs(tmp_path / "bad")) == 2
    assert all(hub_module._blob_matches_name(os.fspath(blobs / name)) for name in _blobs(tmp_path / "bad"))


def test_config_repo_id_is_fetched_with_the_calls_hub_options(hub, tmp_path):
    # The gated repo's config needs the call's token; it lands in the call's cache_dir.
    model = AutoModelForCausalLM.from_pretrained(GATED_REPO, config=GATED_REPO, token=GATED_TOKEN, cache_dir=tmp_path)
    assert_loaded(model, hub.repos.states[(GATED_REPO, "main")])
    assert any(path.name == "config.json" for path in tmp_path.rglob("config.json"))
    with pytest.raises(errors.GatedRepoError):
        AutoModelForCausalLM.from_pretrained(MAIN_REPO, config=GATED_REPO, cache_dir=tmp_path / "no-token")


def test_generation_config_from_a_repo_id_fetches_that_file(hub, tmp_path):
    import warpload

    ours = warpload.GenerationConfig.from_pretrained(MAIN_REPO, cache_dir=tmp_path)
    theirs = transformers.GenerationConfig.from_pretrained(MAIN_REPO, cache_dir=tmp_path / "transformers")
    assert ours.max_new_tokens == theirs.max_new_tokens == 7
    assert downloaded(hub).count("generation_config.json") == 2 and "model.safetensors" not in downloaded(hub)
    assert warpload.GenerationConfig.from_pretrained(MAIN_REPO, cache_dir=tmp_path, local_files_only=True,
                                                     max_new_tokens=3).max_new_tokens == 3


def test_a_connection_dropped_before_the_answer_is_tried_once_more(hub, tmp_path, monkeypatch):
    import httpx2

    real, calls = huggingface_hub.hf_hub_download, []

    def drops_first(*args, **kwargs):
        calls.append(args[1])
        if len(calls) == 1:
            raise httpx2.RemoteProtocolError("Server disconnected without sending a response.")
        return real(*args, **kwargs)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", drops_first)
    model = AutoModelForCausalLM.from_pretrained(MAIN_REPO, cache_dir=tmp_path)
    assert_loaded(model, hub.repos.states[(MAIN_REPO, "main")])
    assert calls[0] == calls[1]  # the same file, asked again

    def always_drops(*args, **kwargs):
        raise httpx2.RemoteProtocolError("Server disconnected without sending a response.")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", always_drops)
    with pytest.raises(errors.HubError, match="Server disconnected"):
        AutoModelForCausalLM.from_pretrained(MAIN_REPO, cache_dir=tmp_path / "again")
