"""warpload.AutoTokenizer on repo ids, through warpload's Hub layer, against olah serving git repos on 127.0.0.1
(tests/hub_server.py): only tokenizer files are fetched, and revision, subfolder, cache_dir, local_files_only and
the Hub errors behave as for the model."""
from __future__ import annotations

import pytest

pytest.importorskip("olah", reason="the hub tests serve repos with olah (pip install olah)")

import transformers  # noqa: E402

from hub_repos import GATED_REPO, GATED_TOKEN, MAIN_REPO, TOKENIZER_REPO  # noqa: E402
from hub_server import hub_fixture, hub_session_fixture, proxy_fixture  # noqa: E402,F401
from warpload import errors  # noqa: E402
from warpload.tokenization.auto import AutoTokenizer  # noqa: E402

TEXTS = ["Hello, world! warpload loads", "The quick brown fox"]
CHAT = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]


def fetched(hub) -> list[str]:
    """Repo paths whose bodies the front served (GET on /resolve/)."""
    return sorted(path.split("/resolve/", 1)[1].split("/", 1)[1] for method, path, _ in hub.front.log.entries
                  if method == "GET" and "/resolve/" in path)


def assert_same_as_transformers(tokenizer, source) -> None:
    reference = transformers.AutoTokenizer.from_pretrained(source)
    assert dict(tokenizer(TEXTS)) == dict(reference(TEXTS))
    assert tokenizer.special_tokens_map == reference.special_tokens_map
    assert tokenizer.apply_chat_template(CHAT, tokenize=False) == reference.apply_chat_template(CHAT, tokenize=False)


def test_repo_id_fetches_only_the_tokenizer_files(hub, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER_REPO, cache_dir=tmp_path)
    assert_same_as_transformers(tokenizer, hub.repos.tokenizers["main"])
    assert sorted(tokenizer.chat_template) == ["default", "tool_use"]
    # config.json too: its model_type takes part in choosing the tokenizer class, as in transformers.
    assert fetched(hub) == ["additional_chat_templates/tool_use.jinja", "chat_template.jinja", "config.json",
                            "tokenizer.json", "tokenizer_config.json"]
    assert tokenizer.name_or_path == TOKENIZER_REPO


@pytest.mark.parametrize("revision", ["tok-v1", "commit"])
def test_revision_loads_that_commits_tokenizer(hub, tmp_path, revision):
    revision = hub.repos.commits["tok-v1"] if revision == "commit" else revision
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER_REPO, revision=revision, cache_dir=tmp_path)
    assert_same_as_transformers(tokenizer, hub.repos.tokenizers["tok-v1"])
    assert tokenizer.pad_token is None


def test_subfolder_loads_the_tokenizer_under_it(hub, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER_REPO, subfolder="sub", cache_dir=tmp_path)
    assert_same_as_transformers(tokenizer, hub.repos.tokenizers["sub"])
    assert all(path.startswith("sub/") for path in fetched(hub))


def test_local_files_only_uses_the_cache_after_one_online_load(hub, tmp_path, monkeypatch):
    online = AutoTokenizer.from_pretrained(TOKENIZER_REPO, cache_dir=tmp_path)
    hub.front.log.clear()
    offline = AutoTokenizer.from_pretrained(TOKENIZER_REPO, cache_dir=tmp_path, local_files_only=True)
    assert hub.front.log.entries == []
    assert dict(offline(TEXTS)) == dict(online(TEXTS)) and offline.chat_template == online.chat_template
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert dict(AutoTokenizer.from_pretrained(TOKENIZER_REPO, cache_dir=tmp_path)(TEXTS)) == dict(online(TEXTS))
    with pytest.raises(errors.NotCachedError, match="couldn't find them in the cached files"):
        AutoTokenizer.from_pretrained(TOKENIZER_REPO, revision="tok-v1", cache_dir=tmp_path)


def test_missing_repo_and_repo_without_tokenizer_raise_hub_errors(hub, tmp_path):
    with pytest.raises(errors.RepositoryNotFoundError, match="org/no-such-repo"):
        AutoTokenizer.from_pretrained("org/no-such-repo", cache_dir=tmp_path)
    with pytest.raises(errors.EntryNotFoundError, match=f"{MAIN_REPO} does not appear to have a file named "
                       "tokenizer.json or tokenizer_config.json"):
        AutoTokenizer.from_pretrained(MAIN_REPO, cache_dir=tmp_path)
    with pytest.raises(errors.RevisionNotFoundError):
        AutoTokenizer.from_pretrained(TOKENIZER_REPO, revision="no-such-branch", cache_dir=tmp_path)


def test_token_reaches_the_hub(hub, tmp_path):
    """The gated repo has no tokenizer: without the token it is refused, with it the listing says what is missing."""
    with pytest.raises(errors.GatedRepoError, match="pass `token=<your_token>`"):
        AutoTokenizer.from_pretrained(GATED_REPO, cache_dir=tmp_path)
    with pytest.raises(errors.EntryNotFoundError, match="does not appear to have a file named tokenizer.json"):
        AutoTokenizer.from_pretrained(GATED_REPO, cache_dir=tmp_path, token=GATED_TOKEN)
    assert {auth for _, _, auth in hub.front.log.entries} >= {f"Bearer {GATED_TOKEN}"}


def test_proxies_route_the_tokenizer_requests(hub, proxy, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER_REPO, cache_dir=tmp_path, proxies={"http": proxy.url})
    through_proxy = proxy.log.paths()
    assert any("/api/models/" in path for path in through_proxy)
    assert any(path.endswith("tokenizer.json") for path in through_proxy)
    assert_same_as_transformers(tokenizer, hub.repos.tokenizers["main"])
