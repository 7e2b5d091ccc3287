"""PEFT adapter repositories on the Hub: adapter_config.json and the adapter weights fetched into the shared cache."""
from __future__ import annotations

import os
from typing import Optional

from .resolve import HubOptions, HubRequest, snapshot_root

ADAPTER_CONFIG_NAME = "adapter_config.json"
# peft's file names, in the order peft looks for them.
ADAPTER_WEIGHTS_NAMES = ("adapter_model.safetensors", "adapter_model.bin")


def adapter_folder(location: str, options: HubOptions, *, subfolder: str = "") -> Optional[str]:
    """The local folder holding `location`'s adapter_config.json and weights (fetched for a repo id), or None
    when it is no adapter. Raises the Hub's errors (RepositoryNotFoundError ...) for a repo id."""
    if os.path.isdir(location):
        folder = os.path.join(location, subfolder)
        return folder if os.path.isfile(os.path.join(folder, ADAPTER_CONFIG_NAME)) else None
    request = HubRequest(location, options, subfolder)
    if options.offline:
        try:
            config_path = request.fetch(ADAPTER_CONFIG_NAME, request.revision, offline=True)
        except FileNotFoundError:
            return None
        return os.path.dirname(config_path)
    commit, listing = request.listing()
    if ADAPTER_CONFIG_NAME not in listing:
        return None
    weights = next((name for name in ADAPTER_WEIGHTS_NAMES if name in listing), None)
    if weights is None:
        raise request.missing(ADAPTER_WEIGHTS_NAMES[0], listing)
    config_path = request.fetch_checked(ADAPTER_CONFIG_NAME, request.revision)
    request.fetch_checked(weights, commit)
    return os.path.join(snapshot_root(config_path, request.subfolder), request.subfolder)
