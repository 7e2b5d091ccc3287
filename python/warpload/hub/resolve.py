"""Hub resolution: a repo id becomes a cached snapshot folder holding exactly the files a load needs.

Everything goes through huggingface_hub (imported lazily), so the cache is the one every HF tool
shares: `models--org--name/{blobs,refs,snapshots}`. One listing request (`model_info` at the
revision: commit + file names) decides which files exist; then only config.json,
generation_config.json and the chosen weights (the index first, then its shards, in parallel) are
fetched. Remote code (`auto_map`, trust_remote_code=True) is fetched by hub/remote_code.py through
this module's requests: each class's module and its relative imports, at `code_revision` (which
may name another commit than `revision`, or another repo), into that commit's snapshot. Local
folders and files pass through unchanged. start_pretrained returns before the shards are in
(ShardDownloads), so that from_pretrained loads each shard as it lands (loading/shard_stream.py).
"""
from __future__ import annotations

import contextlib
import contextvars
import hashlib
import os
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Union

from .._fileio import read_shard_index
from ..constants import (
    CONFIG_NAME,
    GENERATION_CONFIG_NAME,
    PYTORCH_WEIGHTS_NAME,
    SAFETENSORS_INDEX_NAME,
    SAFETENSORS_WEIGHTS_NAME,
    TF_H5_WEIGHTS_NAME,
    add_variant,
    weight_file_names,
)
from ..errors import (
    EntryNotFoundError,
    GatedRepoError,
    HubError,
    NotCachedError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from .hashes import written_hashes

OFFLINE_DOCS = "https://huggingface.co/docs/transformers/installation#offline-mode"
# Parallel shard downloads: enough to fill a link with per-connection limits, few enough for a small VM.
DOWNLOAD_WORKERS = 8
# Read size when hashing a downloaded blob (hashlib releases the GIL for updates this large). One reused
# buffer that stays in the CPU cache: sha256 of a 512 MB file from the page cache ran at 1.67 GB/s with
# 256 KiB reads into it, 1.44 GB/s with fresh 8 MiB reads (2-core VM; hashing alone: 2.0 GB/s).
HASH_CHUNK = 256 << 10
# Options transformers pops for the Hub and warpload ignores: `mirror` (gone from the Hub), `_commit_hash`.
IGNORED_OPTIONS = ("mirror", "_commit_hash")


@dataclass(frozen=True)
class HubOptions:
    """The download options of one from_pretrained call, as transformers names them."""

    cache_dir: Optional[str] = None
    force_download: bool = False
    local_files_only: bool = False
    token: Union[str, bool, None] = None
    revision: Optional[str] = None
    proxies: Optional[dict[str, str]] = None
    code_revision: Optional[str] = None

    @classmethod
    def pop_from(cls, kwargs: dict[str, Any]) -> "HubOptions":
        """Removes the Hub options from kwargs (transformers 4.x semantics for the deprecated ones).

        `use_auth_token` warns (FutureWarning) and stands for `token`; both given is a ValueError.
        `resume_download` warns and changes nothing: downloads always resume. Raises ValueError for
        force_download together with local_files_only.
        """
        for name in IGNORED_OPTIONS:
            kwargs.pop(name, None)
        token = kwargs.pop("token", None)
        use_auth_token = kwargs.pop("use_auth_token", None)
        if use_auth_token is not None:
            warnings.warn("The `use_auth_token` argument is deprecated and will be removed in v5 of Transformers. "
                          "Please use `token` instead.", FutureWarning, stacklevel=3)
            if token is not None:
                raise ValueError("`token` and `use_auth_token` are both specified. Please set only the argument "
                                 "`token`.")
            token = use_auth_token
        if kwargs.pop("resume_download", None) is not None:
            warnings.warn("`resume_download` is deprecated and will be removed in version 1.0.0. Downloads always "
                          "resume when possible. If you want to force a new download, use `force_download=True`.",
                          FutureWarning, stacklevel=3)
        cache_dir = kwargs.pop("cache_dir", None)
        options = cls(cache_dir=None if cache_dir is None else os.fspath(cache_dir),
                      force_download=bool(kwargs.pop("force_download", False)),
                      local_files_only=bool(kwargs.pop("local_files_only", False)), token=token,
                      revision=kwargs.pop("revision", None), proxies=kwargs.pop("proxies", None),
                      code_revision=kwargs.pop("code_revision", None))
        if options.force_download and options.offline:
            raise ValueError("Cannot pass 'force_download=True' and 'local_files_only=True' at the same time.")
        return options

    @property
    def offline(self) -> bool:
        """local_files_only, or HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE set (read now, as well as at import)."""
        from huggingface_hub import constants

        flag = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
        return self.local_files_only or constants.is_offline_mode() or flag.upper() in ("1", "ON", "YES", "TRUE")


def resolve_pretrained(location: str, options: HubOptions, *, subfolder: str = "", variant: Optional[str] = None,
                       use_safetensors: Optional[bool] = None, from_tf: bool = False, weights: bool = True,
                       check_config: Optional[Callable[[str], None]] = None) -> str:
    """The local folder to load `location` from: itself when it exists here, else the cached snapshot of the repo.

    For a repo id the snapshot gets config.json, generation_config.json (if the repo has it) and the
    weights transformers would pick (`weights=False`: none); remote code is fetched by
    remote_code.fetch_remote_code. Raises RepositoryNotFoundError, GatedRepoError,
    RevisionNotFoundError, EntryNotFoundError, NotCachedError (all HubError, an OSError) naming
    repo, revision and file; check_config as for start_pretrained.
    """
    location, shards = start_pretrained(location, options, subfolder=subfolder, variant=variant,
                                        use_safetensors=use_safetensors, from_tf=from_tf, weights=weights,
                                        check_config=check_config)
    if shards is not None:
        with shards:
            shards.wait()
    return location


def start_pretrained(location: str, options: HubOptions, *, subfolder: str = "", variant: Optional[str] = None,
                     use_safetensors: Optional[bool] = None, from_tf: bool = False, weights: bool = True,
                     check_config: Optional[Callable[[str], None]] = None) -> tuple[str, Optional["ShardDownloads"]]:
    """resolve_pretrained, returning as soon as everything but the shards of a sharded checkpoint is cached.

    Returns (folder, shards): shards is None when nothing is left to download; otherwise its files
    are still downloading in parallel, and the caller iterates `shards.completed()` (or `wait()`)
    and closes it (a context manager), which also ends this call's proxy routing. Raises as
    resolve_pretrained does; a shard's error is raised by completed() / wait(). `check_config`
    is called with the path of config.json (when there is one) before any weights are fetched:
    what it raises ends the call with nothing downloaded in vain.
    """
    if os.path.exists(location):
        local_config = os.path.join(location, subfolder, CONFIG_NAME)
        if check_config is not None and os.path.isfile(local_config):
            check_config(local_config)
        return location, None
    _check_repo_id(location)
    request = HubRequest(location, options, subfolder)
    with contextlib.ExitStack() as routing:
        routing.enter_context(call_proxies(options.proxies))
        if options.offline:
            return request.from_cache(variant, use_safetensors, from_tf, weights, check_config), None
        snapshot, shards = request.download(variant, use_safetensors, from_tf, weights, check_config)
        if shards is not None:
            shards.keep_open(routing.pop_all())
        return snapshot, shards


def resolve_files(location: str, options: HubOptions, names: tuple[str, ...], *, subfolder: str = "",
                  folders: tuple[str, ...] = (), optional: tuple[str, ...] = ()) -> str:
    """The local folder (under `subfolder`) holding those of `names` (and the files under `folders`, and the
    `optional` names, which alone do not count) that `location` has.

    A local folder is used as it is. For a repo id, one listing request says which of the files
    exist at the revision; those are fetched into the snapshot of its commit (offline: the cached
    ones are used). Raises EntryNotFoundError when the repo has none of them, NotCachedError when
    offline and none is cached, and the other HubErrors as resolve_pretrained does.
    """
    if os.path.exists(location):
        return os.path.join(location, subfolder)
    _check_repo_id(location)
    request = HubRequest(location, options, subfolder)
    with call_proxies(options.proxies):
        if options.offline:
            return request.cached_files(names)
        return request.download_files(names, folders, optional)


class ShardDownloads:
    """The shards of one resolution, downloading in parallel in the caller's context (its proxies).

    `landed` maps each shard name to the time.perf_counter() at which its checked file was in the
    cache, so callers can show that loading overlapped the download.
    """

    def __init__(self, request: "HubRequest", names: list[str], commit: str, folder: str) -> None:
        self.folder = folder
        self.names = names
        self.landed: dict[str, float] = {}
        self._routing = contextlib.ExitStack()
        self._pool = ThreadPoolExecutor(min(DOWNLOAD_WORKERS, len(names)))
        self._futures = [self._pool.submit(contextvars.copy_context().run, self._fetch, request, name, commit)
                         for name in names]

    def _fetch(self, request: "HubRequest", name: str, commit: str) -> str:
        path = request.fetch_checked(name, commit)
        self.landed[name] = time.perf_counter()
        return path

    def keep_open(self, routing: contextlib.ExitStack) -> None:
        """Takes over the proxy routing of the call, to end it once the downloads are over."""
        self._routing.enter_context(routing)

    def completed(self) -> Iterator[str]:
        """The snapshot path of each shard, in the order the downloads finish; a failed one raises its HubError."""
        for future in as_completed(self._futures):
            yield future.result()

    def wait(self) -> None:
        """Returns when every shard is cached; raises the first failure seen."""
        for _ in self.completed():
            pass

    def close(self) -> None:
        """Cancels downloads not yet started, waits for the running ones (their files are written
        atomically, so none is left half), then ends the proxy routing."""
        try:
            self._pool.shutdown(wait=True, cancel_futures=True)
        finally:
            self._routing.close()

    def __enter__(self) -> "ShardDownloads":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _check_repo_id(location: str) -> None:
    try:
        from huggingface_hub.utils import HFValidationError, validate_repo_id
    except ImportError as err:
        raise ImportError(f"{location} is not a local folder; loading it from the Hub needs huggingface_hub: "
                          "`pip install huggingface_hub` (or pass a local folder)") from err

    try:
        validate_repo_id(location)
    except HFValidationError as err:
        raise RepositoryNotFoundError(
            f"{location} is not a local folder and not a valid repo id ({err}); pass the path of a folder that "
            "holds config.json, or a repo id like 'org/name'", repo_id=location) from err


class HubRequest:
    """One resolution: repo, options, and the snapshot it fills."""

    def __init__(self, repo_id: str, options: HubOptions, subfolder: str) -> None:
        self.repo_id = repo_id
        self.options = options
        self.subfolder = subfolder.strip("/")
        self.revision = options.revision or "main"

    def _path(self, name: str) -> str:
        return f"{self.subfolder}/{name}" if self.subfolder else name

    def fetch(self, name: str, revision: str, *, offline: bool = False, force: bool = False) -> str:
        """hf_hub_download of `name` (relative to the subfolder) into the shared cache; its snapshot path.

        A connection the server or proxy dropped before answering (it closed an idle keep-alive connection
        the pool reused) is tried once more, as urllib3 retries idempotent requests; other errors are not."""
        try:
            return self._download(name, revision, offline, force)
        except HubError as err:
            if not _dropped_before_answer(err):
                raise
        return self._download(name, revision, offline, force)

    def _download(self, name: str, revision: str, offline: bool, force: bool) -> str:
        import huggingface_hub

        try:
            return huggingface_hub.hf_hub_download(
                self.repo_id, name, subfolder=self.subfolder or None, revision=revision,
                cache_dir=self.options.cache_dir, force_download=(self.options.force_download or force) and not offline,
                token=self.options.token, local_files_only=offline)
        except huggingface_hub.errors.LocalEntryNotFoundError as err:
            if offline:
                raise self._not_cached(name) from err
            raise self._translate(err, name) from err
        except Exception as err:
            raise self._translate(err, name) from err

    def fetch_checked(self, name: str, revision: str) -> str:
        """_fetch, then the content hash of a new blob checked against its name (the ETag: sha256 for LFS
        and Xet files, the git blob id for others); a mismatch is evicted and fetched once more.

        huggingface_hub checks only the size, so a corrupted body of the right length would stay cached.
        The sha256 of an LFS file is taken from the bytes as they are written (hub/hashes.py), not read back.
        """
        import huggingface_hub

        cached = huggingface_hub.try_to_load_from_cache(self.repo_id, self._path(name), self.options.cache_dir,
                                                        revision)
        with written_hashes() as written:
            path = self.fetch(name, revision)
        if (isinstance(cached, str) and not self.options.force_download) or _blob_matches_name(path, written):
            return path
        _evict(path)
        with written_hashes() as written:
            path = self.fetch(name, revision, force=True)
        if _blob_matches_name(path, written):
            return path
        _evict(path)
        raise HubError(f"{self._path(name)} of {self.repo_id} at revision {self.revision!r} arrived twice with content "
                       f"that does not match its hash {os.path.basename(os.path.realpath(path))!r}; it was removed "
                       "from the cache. Retry later, or check the proxy or mirror between you and the Hub.",
                       repo_id=self.repo_id, revision=self.revision, filename=self._path(name))

    def _not_cached(self, name: str) -> NotCachedError:
        from huggingface_hub import constants

        return NotCachedError(
            f"We couldn't connect to '{constants.ENDPOINT}' to load the files, and couldn't find them in the cached "
            f"files: {self.repo_id} at revision {self.revision!r} has no cached {self._path(name)}"
            f"{f' in {self.options.cache_dir}' if self.options.cache_dir else ''}.\nCheck your internet connection "
            f"or see how to run the library in offline mode at '{OFFLINE_DOCS}'.",
            repo_id=self.repo_id, revision=self.revision, filename=self._path(name))

    def _translate(self, err: Exception, name: Optional[str]) -> Exception:
        """huggingface_hub's and httpx's errors as warpload's HubError subclasses with transformers' texts."""
        import httpx2
        from huggingface_hub import constants, errors

        where = dict(repo_id=self.repo_id, revision=self.revision, filename=name and self._path(name))
        if isinstance(err, errors.GatedRepoError) or (
                isinstance(err, errors.HfHubHTTPError) and getattr(err.response, "status_code", None) == 403):
            return GatedRepoError(
                f"You are trying to access a gated repo.\nMake sure to have access to it at "
                f"{constants.ENDPOINT}/{self.repo_id}.\nThe server refused {self.repo_id} at revision "
                f"{self.revision!r} ({err.response.status_code}): pass `token=<your_token>` (or log in with "
                "`hf auth login`) with a token that has access.", **where)
        if isinstance(err, errors.RepositoryNotFoundError):
            return RepositoryNotFoundError(
                f"{self.repo_id} is not a local folder and is not a valid model identifier listed on "
                f"'{constants.ENDPOINT}/models'\nIf this is a private repository, make sure to pass a token having "
                "permission to this repo either by logging in with `hf auth login` or by passing "
                "`token=<your_token>`", **where)
        if isinstance(err, errors.RevisionNotFoundError):
            return RevisionNotFoundError(
                f"{self.revision} is not a valid git identifier (branch name, tag name or commit id) that exists "
                f"for this model name. Check the model page at '{constants.ENDPOINT}/{self.repo_id}' for "
                "available revisions.", **where)
        # LocalEntryNotFoundError (no connection, not cached) subclasses EntryNotFoundError: test it first.
        if isinstance(err, (httpx2.TransportError, errors.OfflineModeIsEnabled, errors.LocalEntryNotFoundError)):
            via = f" through proxies {self.options.proxies}" if self.options.proxies else ""
            return HubError(f"Could not reach {constants.ENDPOINT}{via} to load {self._path(name or '')} of "
                            f"{self.repo_id} at revision {self.revision!r}: {err}. Check the connection (and the "
                            "proxy), or pass local_files_only=True to use the cache.", **where)
        if isinstance(err, errors.EntryNotFoundError):
            return self.missing(name or "", [])
        return err

    def missing(self, name: str, listing: list[str]) -> EntryNotFoundError:
        from huggingface_hub import constants

        has = f" It has: {', '.join(sorted(listing))}." if listing else ""
        return EntryNotFoundError(
            f"{self.repo_id} does not appear to have a file named {self._path(name)}. Checkout "
            f"'{constants.ENDPOINT}/{self.repo_id}/tree/{self.revision}' for available files.{has}",
            repo_id=self.repo_id, revision=self.revision, filename=self._path(name))

    def listing(self) -> tuple[str, list[str]]:
        """(commit, file names relative to the subfolder) at the revision: one request."""
        from huggingface_hub import HfApi

        try:
            info = HfApi().model_info(self.repo_id, revision=self.revision, token=self.options.token)
        except Exception as err:
            raise self._translate(err, None) from err
        prefix = f"{self.subfolder}/" if self.subfolder else ""
        names = [sibling.rfilename[len(prefix):] for sibling in info.siblings or []
                 if sibling.rfilename.startswith(prefix)]
        return info.sha, names

    def download(self, variant: Optional[str], use_safetensors: Optional[bool], from_tf: bool, weights: bool,
                 check_config: Optional[Callable[[str], None]] = None) -> tuple[str, Optional[ShardDownloads]]:
        """(snapshot, shards still downloading or None) once config, index and the other files are cached."""
        commit, listing = self.listing()
        files = set(listing)
        if CONFIG_NAME not in files:
            raise self.missing(CONFIG_NAME, listing)
        chosen = self._choose_weights(files, listing, variant, use_safetensors, from_tf) if weights else None
        # The index downloads while config.json does (a HEAD and a GET each): the shards wait for both.
        with ThreadPoolExecutor(1) as pool:
            index = pool.submit(contextvars.copy_context().run, self.fetch_checked, chosen, commit) \
                if chosen is not None and chosen.endswith(".json") else None
            # The user's revision name here, so refs/{revision} is written for later offline loads.
            config_path = self.fetch_checked(CONFIG_NAME, self.revision)
            index_path = index.result() if index is not None else None
        if check_config is not None:
            check_config(config_path)
        snapshot = snapshot_root(config_path, self.subfolder)
        wanted = [GENERATION_CONFIG_NAME] if weights and GENERATION_CONFIG_NAME in files else []
        shard_names = self._shards(index_path, files, listing) if index_path is not None else []
        if chosen is not None and index_path is None:
            wanted.append(chosen)
        # The shards start first: they are the long part, and the caller can load them as they land.
        shards = ShardDownloads(self, shard_names, commit, os.path.join(snapshot, self.subfolder)) \
            if shard_names else None
        try:
            self._fetch_all(wanted, commit)
        except BaseException:
            if shards is not None:
                shards.close()
            raise
        return snapshot, shards

    def download_files(self, names: tuple[str, ...], folders: tuple[str, ...], optional: tuple[str, ...]) -> str:
        """The snapshot folder (under the subfolder) once the listed ones of `names`, `folders/*` and `optional`
        are cached; EntryNotFoundError when the listing has none of `names` and `folders/*`."""
        commit, listing = self.listing()
        wanted = [name for name in listing
                  if name in names or any(name.startswith(f"{folder}/") for folder in folders)]
        if not wanted:
            raise self.missing(" or ".join(names), listing)
        wanted += [name for name in listing if name in optional and name not in wanted]
        # The user's revision name for the first, so refs/{revision} is written for later offline loads.
        first = self.fetch_checked(wanted[0], self.revision)
        self._fetch_all(wanted[1:], commit)
        return os.path.join(snapshot_root(first, os.path.join(self.subfolder, os.path.dirname(wanted[0]))),
                            self.subfolder)

    def cached_files(self, names: tuple[str, ...]) -> str:
        """The cached snapshot folder (under the subfolder) holding any of `names`, with no request."""
        import huggingface_hub

        for name in names:
            path = huggingface_hub.try_to_load_from_cache(self.repo_id, self._path(name), self.options.cache_dir,
                                                          self.revision)
            if isinstance(path, str):
                return os.path.dirname(path)
        raise self._not_cached(names[0])

    def _choose_weights(self, files: set[str], listing: list[str], variant: Optional[str],
                        use_safetensors: Optional[bool], from_tf: bool) -> str:
        candidates = [TF_H5_WEIGHTS_NAME] if from_tf else weight_file_names(variant, use_safetensors)
        for name in candidates:
            if name in files:
                return name
        has = f" It has: {', '.join(sorted(listing))}."
        where = dict(repo_id=self.repo_id, revision=self.revision)
        st_name, st_index = add_variant(SAFETENSORS_WEIGHTS_NAME, variant), add_variant(SAFETENSORS_INDEX_NAME, variant)
        bin_name = add_variant(PYTORCH_WEIGHTS_NAME, variant)
        if use_safetensors:
            raise EntryNotFoundError(
                f"{self.repo_id} does not appear to have a file named {st_name} or {st_index} and thus cannot be "
                f"loaded with `safetensors`. Please do not set `use_safetensors=True`.{has}", filename=st_name,
                **where)
        if variant and any(name in files for name in weight_file_names(None, use_safetensors)):
            raise EntryNotFoundError(
                f"{self.repo_id} does not appear to have a file named {bin_name} but there is a file without the "
                f"variant {variant}. Use `variant=None` to load this model from those weights.{has}",
                filename=bin_name, **where)
        named = TF_H5_WEIGHTS_NAME if from_tf else f"{bin_name} or {st_name}"
        raise EntryNotFoundError(f"{self.repo_id} does not appear to have a file named {named}.{has}",
                                 filename=bin_name, **where)

    def _shards(self, index_path: str, files: set[str], listing: list[str]) -> list[str]:
        shards = read_shard_index(index_path).shards
        missing = [shard for shard in shards if shard not in files]
        if missing:
            raise self.missing(missing[0], listing)
        return shards

    def _fetch_all(self, names: list[str], commit: str) -> None:
        """Downloads in parallel; each worker runs in this call's context (its proxies)."""
        if len(names) <= 1:
            for name in names:
                self.fetch_checked(name, commit)
            return
        with ThreadPoolExecutor(min(DOWNLOAD_WORKERS, len(names))) as pool:
            futures = [pool.submit(contextvars.copy_context().run, self.fetch_checked, name, commit)
                       for name in names]
            for future in futures:
                future.result()

    def from_cache(self, variant: Optional[str], use_safetensors: Optional[bool], from_tf: bool, weights: bool,
                   check_config: Optional[Callable[[str], None]] = None) -> str:
        """The cached snapshot, with no request: refs/{revision} (or the commit given) names it."""
        config_path = self.fetch(CONFIG_NAME, self.revision, offline=True)
        if check_config is not None:
            check_config(config_path)
        snapshot = snapshot_root(config_path, self.subfolder)
        if not weights:
            return snapshot
        folder = os.path.join(snapshot, self.subfolder)
        candidates = [TF_H5_WEIGHTS_NAME] if from_tf else weight_file_names(variant, use_safetensors)
        chosen = next((name for name in candidates if os.path.isfile(os.path.join(folder, name))), None)
        if chosen is None:
            raise self._not_cached(candidates[0])
        if chosen.endswith(".json"):
            for shard in read_shard_index(os.path.join(folder, chosen)).shards:
                if not os.path.isfile(os.path.join(folder, shard)):
                    raise self._not_cached(shard)
        return snapshot


def _dropped_before_answer(err: BaseException) -> bool:
    """Whether `err` (or an error it was raised from) is the server closing the connection without a response."""
    import httpx2

    while err is not None:
        if isinstance(err, httpx2.RemoteProtocolError):
            return True
        err = err.__cause__ or err.__context__
    return False


def snapshot_root(path: str, subfolder: str) -> str:
    """snapshots/{commit} from the path of a file fetched into it (under `subfolder`)."""
    folder = os.path.dirname(path)
    for _ in [part for part in subfolder.split("/") if part]:
        folder = os.path.dirname(folder)
    return folder


def _blob_matches_name(path: str, written: Optional[dict[str, str]] = None) -> bool:
    """Whether the cached blob behind `path` hashes to its name: sha256 (64 hex digits) or a git blob id (40).
    Blobs named otherwise (an ETag that is no content hash) pass. A digest in `written` (hub/hashes.py: taken
    from the bytes as they were written) stands for the file's."""
    blob = os.path.realpath(path)
    name = os.path.basename(blob)
    if written and blob in written:
        return written[blob] == name
    if len(name) not in (40, 64) or any(char not in "0123456789abcdef" for char in name):
        return True
    digest = hashlib.sha256() if len(name) == 64 else hashlib.sha1()
    if len(name) == 40:
        digest.update(b"blob %d\0" % os.path.getsize(blob))
    buffer = bytearray(HASH_CHUNK)
    view = memoryview(buffer)
    with open(blob, "rb", buffering=0) as handle:
        while count := handle.readinto(buffer):
            digest.update(view[:count])
    return digest.hexdigest() == name


def _evict(path: str) -> None:
    """Removes a snapshot entry and its blob from the cache."""
    blob = os.path.realpath(path)
    for entry in (path, blob):
        with contextlib.suppress(FileNotFoundError):
            os.remove(entry)


# The proxies of the from_pretrained call running in this context (threads it starts copy the context).
_CALL_PROXIES: contextvars.ContextVar[Optional["_ProxyRoutes"]] = contextvars.ContextVar("warpload_proxies",
                                                                                      default=None)
_ROUTING_LOCK = threading.Lock()


class _ProxyRoutes:
    """requests' proxies dict matched per URL ('scheme://host', 'scheme', 'all://host', 'all'), one transport each."""

    def __init__(self, proxies: dict[str, str]) -> None:
        self.proxies = proxies
        self.transports: dict[str, Any] = {}
        self.lock = threading.Lock()

    def transport_for(self, url: Any) -> Any:
        import httpx2

        for key in (f"{url.scheme}://{url.host}", url.scheme, f"all://{url.host}", "all"):
            proxy = self.proxies.get(key)
            if proxy:
                proxy = proxy if "://" in proxy else f"http://{proxy}"
                with self.lock:
                    if proxy not in self.transports:
                        self.transports[proxy] = httpx2.HTTPTransport(proxy=proxy)
                    return self.transports[proxy]
        return None

    def close(self) -> None:
        for transport in self.transports.values():
            transport.close()


@contextlib.contextmanager
def call_proxies(proxies: Optional[dict[str, str]]) -> Iterator[None]:
    """Routes this call's requests (and its download threads') through `proxies`, nobody else's.

    huggingface_hub 1.x+ has no `proxies` parameter and shares one httpx client; its transport
    choice is wrapped once so that requests made in a context carrying proxies go through a
    call-private proxy transport, and every other request takes the client's own route (direct,
    or the HTTP(S)_PROXY environment).
    """
    if not proxies:
        yield
        return
    if not isinstance(proxies, dict):
        raise TypeError(f"proxies={proxies!r}: pass a dict like {{'http': 'http://host:port'}}")
    _route_session_by_context()
    routes = _ProxyRoutes(proxies)
    token = _CALL_PROXIES.set(routes)
    try:
        yield
    finally:
        _CALL_PROXIES.reset(token)
        routes.close()


def _route_session_by_context() -> None:
    from huggingface_hub.utils import get_session

    session = get_session()
    with _ROUTING_LOCK:
        if getattr(session, "_warpload_routed", False):
            return
        default_route = session._transport_for_url

        def transport_for_url(url: Any) -> Any:
            routes = _CALL_PROXIES.get()
            routed = routes.transport_for(url) if routes is not None else None
            return routed if routed is not None else default_route(url)

        session._transport_for_url = transport_for_url
        session._warpload_routed = True
