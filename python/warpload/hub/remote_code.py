"""Remote code: the Python modules a config's `auto_map` names, fetched into the Hub cache at `code_revision`.

transformers' rules (dynamic_module_utils.get_class_from_dynamic_module): a class reference
"module.Class" lives in the model's own repo, at `code_revision`, else at the weights' commit; a
reference "org/repo--module.Class" lives in that repo, at `code_revision`, else its default
branch. config.json and the weights always come from `revision`. Each module and the relative
imports it needs (found as transformers finds them, recursively) are fetched through warpload's
hub layer (the call's proxies, token, cache_dir, force_download and offline rules) into the
shared huggingface_hub cache, so the snapshot of the code's commit holds them; transformers then
imports the classes from that snapshot folder (loading/transformers_backend.py).
"""
from __future__ import annotations

import dataclasses
import importlib.util
import os
import posixpath
from dataclasses import dataclass, field
from typing import Any, Collection, Mapping, Optional

from .._fileio import read_json_object
from ..constants import CONFIG_NAME
from .resolve import HubOptions, HubRequest, call_proxies

# The auto classes from_pretrained builds: the config first, then the causal LM.
AUTO_CLASSES = ("AutoConfig", "AutoModelForCausalLM")


@dataclass(frozen=True)
class RemoteClass:
    """Where one auto_map class is defined: `reference` ("module.Class") inside the local `folder`
    (the snapshot of the code's repo and commit, or the model's own local folder)."""

    reference: str
    folder: str


@dataclass(frozen=True)
class RemoteCode:
    """trust_remote_code as the caller gave it, and the auto_map classes fetched for it (none unless True)."""

    trust_remote_code: Optional[bool] = None
    classes: Mapping[str, RemoteClass] = field(default_factory=dict)


class TrustCheck:
    """transformers' trust_remote_code decision for one call, taken from config.json as soon as it is cached
    (hub.start_pretrained's `check_config`), so that untrusted remote code ends the call before any
    weights download, with transformers' message naming the repo id the caller gave.

    Remote code is there when `auto_map` names one of `auto_classes`; it may stay unused when
    transformers knows the config's model_type (then trust_remote_code=None loads the library's
    class, as transformers does). `trust_remote_code` holds the decision afterwards, an answer to
    transformers' interactive prompt included.
    """

    def __init__(self, name: str, trust_remote_code: Optional[bool], auto_classes: tuple[str, ...] = AUTO_CLASSES,
                 *, builtin_model_types: Collection[str] = ()) -> None:
        self.name = name
        self.trust_remote_code = trust_remote_code
        self.auto_classes = auto_classes
        # Without transformers, only these model types can load without the remote code.
        self.builtin_model_types = frozenset(builtin_model_types)

    def __call__(self, config_path: str) -> None:
        """Raises ValueError (transformers' text) when config.json needs remote code that is not trusted."""
        config = read_json_object(config_path)
        references = auto_map_references(config, self.auto_classes).values()
        if not references:
            return
        upstream = next((reference.rpartition("--")[0] for reference in references if "--" in reference), None)
        model_type = config.get("model_type")
        if importlib.util.find_spec("transformers") is None:
            if model_type not in self.builtin_model_types and self.trust_remote_code is not True:
                raise ValueError(f"The repository {self.name} contains custom code which must be executed to correctly "
                                 "load the model. Please pass the argument `trust_remote_code=True` to allow custom "
                                 "code to be run.")
            return
        from transformers.dynamic_module_utils import resolve_trust_remote_code
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING

        self.trust_remote_code = resolve_trust_remote_code(self.trust_remote_code, self.name,
                                                           model_type in CONFIG_MAPPING, True, upstream_repo=upstream)


def auto_map_references(config: Mapping[str, Any], auto_classes: tuple[str, ...]) -> dict[str, str]:
    """The class reference config.json's `auto_map` gives each of `auto_classes` that it names."""
    auto_map = config.get("auto_map")
    if not isinstance(auto_map, dict):
        return {}
    return {auto: auto_map[auto] for auto in auto_classes if isinstance(auto_map.get(auto), str)}


def fetch_remote_code(name: Optional[str], location: Optional[str], options: HubOptions, *, subfolder: str = "",
                      trust_remote_code: Optional[bool] = None,
                      auto_classes: tuple[str, ...] = AUTO_CLASSES) -> RemoteCode:
    """The code of each of `auto_classes` that config.json's auto_map names, fetched (or, offline,
    found in the cache) with transformers' revision rules.

    `name` is what the caller passed (repo id or local folder), `location` the folder it resolved
    to (for a repo id, the snapshot of the weights' commit). Fetches nothing unless
    trust_remote_code is True (TrustCheck has refused untrusted code by then). Raises
    NotCachedError offline when a module is not cached, EntryNotFoundError / RevisionNotFoundError
    / RepositoryNotFoundError (HubError, an OSError) naming repo, revision and file.
    """
    if trust_remote_code is not True or name is None or location is None or not os.path.isdir(location):
        return RemoteCode(trust_remote_code)
    config_path = os.path.join(location, subfolder, CONFIG_NAME)
    references = auto_map_references(read_json_object(config_path), auto_classes) \
        if os.path.isfile(config_path) else {}
    if references and importlib.util.find_spec("transformers") is None:
        raise ImportError(f"{name} has remote code ({', '.join(references.values())}), written for transformers: "
                          "install it with `pip install transformers` (version 5 or newer)")
    fetched: dict[tuple[str, str, str], str] = {}
    with call_proxies(options.proxies):
        classes = {auto: _locate(reference, name, location, options, fetched) for auto, reference in references.items()}
    return RemoteCode(trust_remote_code, classes)


def _locate(reference: str, name: str, location: str, options: HubOptions,
            fetched: dict[tuple[str, str, str], str]) -> RemoteClass:
    """The class `reference` names, its module fetched unless it is in the model's own local folder;
    `fetched` holds the files this call fetched, by (repo, revision or commit, name)."""
    repo_id, _, class_reference = reference.rpartition("--")
    repo_id = repo_id or name
    if repo_id == name and os.path.exists(name):
        return RemoteClass(class_reference, location)
    if repo_id == name:
        # The weights' snapshot folder is named by its commit: without code_revision the code comes from
        # that exact commit (transformers 5 resolves `revision` once for the same reason); errors name the
        # revision the caller gave.
        shown, revision = options.code_revision or options.revision, options.code_revision or os.path.basename(location)
    else:
        shown, revision = options.code_revision, options.code_revision or "main"
    request = HubRequest(repo_id, dataclasses.replace(options, revision=shown), "")
    return RemoteClass(class_reference, _fetch_module(request, class_reference.split(".")[0] + ".py", revision,
                                                      fetched))


def _fetch_module(request: HubRequest, module_file: str, revision: str,
                  fetched: dict[tuple[str, str, str], str]) -> str:
    """The snapshot folder holding `module_file` and every module it imports relatively, all at the commit
    `revision` resolves to; each file once per call (the config's module is often the model's import),
    remembered in `fetched`.

    Only the modules a class needs are fetched, as transformers' get_cached_module_file does: a repo
    may hold other Python files (training scripts, other architectures) that a load never imports.
    """
    from transformers.dynamic_module_utils import get_relative_imports

    offline = request.options.offline

    def fetch(name: str, at: str) -> str:
        key = (request.repo_id, at, name)
        if key not in fetched:
            fetched[key] = request.fetch(name, at, offline=True) if offline else request.fetch_checked(name, at)
        return fetched[key]

    path = fetch(module_file, revision)
    folder = os.path.dirname(path)
    # Fetched by commit from here on: the revision name (a branch) may move while we fetch.
    commit = os.path.basename(folder)
    fetched[(request.repo_id, commit, module_file)] = path
    seen, pending = {module_file}, [module_file]
    while pending:
        current = pending.pop()
        # transformers' own parsing, so that exactly the files it would look for are here.
        for imported in get_relative_imports(os.path.join(folder, current)):
            needed = posixpath.join(posixpath.dirname(current), imported) + ".py"
            if needed not in seen:
                seen.add(needed)
                pending.append(needed)
                fetch(needed, commit)
    return folder
