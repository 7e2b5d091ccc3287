"""from_pretrained's options: the caller's keywords checked once, before any file is read, into one record."""
from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional, Union

from ..engine import devices
from ..engine.mapped import zero_copy_mode
from ..hub.resolve import HubOptions

if TYPE_CHECKING:
    import torch

BACKENDS = ("auto", "warpload", "transformers")

# transformers 5.24 options accepted with no effect here (the Hub's are popped by HubOptions): `_fast_init`,
# `offload_state_dict` and `mirror` are gone from transformers too; `tqdm_class` styles transformers' bars
# (warpload draws its own line); `_from_pipeline` / `_from_auto` only tag transformers' Hub user agent.
IGNORED_OPTIONS = ("_fast_init", "offload_state_dict", "tqdm_class", "_from_pipeline", "_from_auto")
# The Hub's options, popped by HubOptions.pop_from (named here for the misspelling check).
HUB_OPTIONS = ("cache_dir", "force_download", "local_files_only", "token", "use_auth_token", "revision", "proxies",
               "resume_download", "code_revision", "mirror", "_commit_hash")
# Options with a meaning here beyond from_pretrained's named parameters (see LoadOptions.parse).
EXTRA_OPTIONS = ("weights_only", "disable_mmap", "experts_implementation", "allow_all_kernels", "adapter_name",
                 "adapter_kwargs", "skip_unsupported")
# transformers options warpload does not implement: passing one with a value raises NotImplementedError.
UNSUPPORTED_OPTIONS = ("quantization_config", "gguf_file", "tp_plan", "tp_size", "distributed_config", "device_mesh",
                       "key_mapping", "use_kernels", "kernel_config", "load_in_8bit", "load_in_4bit",
                       "fusion_config")
# transformers' defaults of unsupported options: passing one changes nothing, so it is accepted.
_DEFAULTS: dict[str, Any] = {}
# transformers' placement options next to device_map (loading/placement.py reads them).
PLACEMENT_OPTIONS = {"max_memory": None, "offload_folder": None, "offload_buffers": False}


@dataclass
class LoadOptions:
    """One from_pretrained call's options, as transformers names them, after validation.

    `kwargs` holds what is left for the config (field overrides) and the model constructor."""

    name: Optional[str]
    model_args: tuple
    model_class: Optional[type]
    config: Any
    state_dict: Optional[dict[str, "torch.Tensor"]]
    dtype: Any
    device_map: Any
    output_loading_info: bool
    ignore_mismatched_sizes: bool
    use_safetensors: Optional[bool]
    variant: Optional[str]
    subfolder: str
    generation_config: Any
    attn_implementation: Optional[str]
    trust_remote_code: Optional[bool]
    backend: str
    from_tf: bool
    zero_copy: str
    # TF checkpoints: leave out the tensors torch has no dtype for (strings, quantized) instead of refusing them.
    skip_unsupported: bool
    hub: HubOptions
    kwargs: dict[str, Any] = field(default_factory=dict)
    # False: the caller allowed transformers to unpickle code; warpload still never does (errors say so).
    weights_only: bool = True
    experts_implementation: Optional[str] = None
    # An adapter repo or folder given as the model: the name its layers take, and its own Hub options.
    adapter_name: str = "default"
    adapter_kwargs: dict[str, Any] = field(default_factory=dict)
    # max_memory, offload_folder, offload_buffers, as transformers takes them.
    placement_options: dict[str, Any] = field(default_factory=lambda: dict(PLACEMENT_OPTIONS))
    # The one device of device_map, set once the Hub download has started: it imports torch, which then overlaps
    # it. A device_map spreading the model (a strategy, several devices, the disk) sets `placement` instead, and
    # the device becomes the compute device once the map is known (loading/build.py).
    device: Optional["torch.device"] = None
    placement: Any = None

    @property
    def fill_device(self) -> Any:
        """Where parameters are allocated: their final device when the engine fills it directly, else the CPU."""
        return self.device if devices.fills_directly(self.device) else "cpu"

    @classmethod
    def parse(cls, pretrained_model_name_or_path: Optional[Union[str, "os.PathLike[str]"]], model_args: tuple, *,
              dtype: Any, torch_dtype: Any, device_map: Any, backend: str, from_flax: bool,
              zero_copy: Union[None, bool, str], kwargs: dict[str, Any], named: tuple[str, ...] = (),
              **options: Any) -> "LoadOptions":
        """Checks the keywords (raising NotImplementedError, ValueError as from_pretrained documents) and pops the
        ignored, unsupported and Hub ones from `kwargs` (`named`: from_pretrained's own parameter names)."""
        _reject_misspelt(kwargs, named)
        _reject_unsupported(kwargs, from_flax)
        if kwargs.pop("allow_all_kernels", False):
            raise NotImplementedError("allow_all_kernels=True: warpload runs no kernels from the Hub; call "
                                      "transformers.AutoModelForCausalLM.from_pretrained for it")
        zero_copy = _without_mmap(zero_copy, kwargs.pop("disable_mmap", None))
        mapping = zero_copy_mode(zero_copy)
        if backend not in BACKENDS:
            raise ValueError(f"backend={backend!r}: choose one of {', '.join(BACKENDS)}")
        for option in IGNORED_OPTIONS:
            kwargs.pop(option, None)
        hub = HubOptions.pop_from(kwargs)
        placement_options = {option: kwargs.pop(option, default) for option, default in PLACEMENT_OPTIONS.items()}
        skip_unsupported = bool(kwargs.pop("skip_unsupported", False))
        name = None if pretrained_model_name_or_path is None else os.fspath(pretrained_model_name_or_path)
        if options["state_dict"] is not None and name is not None:
            raise ValueError("`state_dict` cannot be passed together with a model name or a `gguf_file`. "
                             "Use one of the two loading strategies.")
        weights_only = bool(kwargs.pop("weights_only", True))
        experts_implementation = kwargs.pop("experts_implementation", None)
        adapter_name = kwargs.pop("adapter_name", None) or "default"
        adapter_kwargs = dict(kwargs.pop("adapter_kwargs", None) or {})
        return cls(name=name, model_args=model_args, dtype=dtype if dtype is not None else torch_dtype,
                   device_map=device_map, backend=backend, zero_copy=mapping, hub=hub, kwargs=kwargs,
                   weights_only=weights_only, experts_implementation=experts_implementation,
                   adapter_name=adapter_name, adapter_kwargs=adapter_kwargs, placement_options=placement_options,
                   skip_unsupported=skip_unsupported, **options)


def known_options(named: tuple[str, ...]) -> tuple[str, ...]:
    """Every keyword from_pretrained takes as an option (not a config field): its `named` parameters and those
    it finds in **kwargs."""
    return (*named, *IGNORED_OPTIONS, *UNSUPPORTED_OPTIONS, *HUB_OPTIONS, *EXTRA_OPTIONS, *PLACEMENT_OPTIONS)


def _reject_misspelt(kwargs: dict[str, Any], named: tuple[str, ...]) -> None:
    """Raises TypeError, before anything is downloaded, for a keyword that is no option but reads like one
    ("devce_map"); other unknown keywords are config overrides, checked once the config is read."""
    options = known_options(named)
    for key in kwargs:
        if key in options:
            continue
        close = difflib.get_close_matches(key, options, n=1, cutoff=0.85)
        if close:
            raise TypeError(f"from_pretrained() got an unexpected keyword argument {key!r}; did you mean "
                            f"{close[0]!r}?")


def _without_mmap(zero_copy: Union[None, bool, str], disable_mmap: Optional[bool]) -> Union[None, bool, str]:
    """transformers' disable_mmap=True (read the files instead of mapping them) is warpload's zero_copy=False."""
    if not disable_mmap:
        return zero_copy
    if zero_copy is True:
        raise ValueError(f"disable_mmap=True and zero_copy={zero_copy!r} contradict each other: disable_mmap "
                         "copies every tensor, zero_copy maps them; pass one")
    return False


def _reject_unsupported(kwargs: dict[str, Any], from_flax: bool) -> None:
    if from_flax:
        raise NotImplementedError("from_flax=True: warpload cannot read Flax checkpoints; convert them to "
                                  "safetensors first")
    for option in UNSUPPORTED_OPTIONS:
        value = kwargs.pop(option, None)
        if value not in (None, False, {}, _DEFAULTS.get(option)):
            raise NotImplementedError(f"{option}= is not implemented by warpload; call "
                                      "transformers.AutoModelForCausalLM.from_pretrained for it")


def target_device(options: LoadOptions) -> None:
    """Sets options.device to the one device device_map names (the enclosing `with torch.device(...)` for None),
    or options.placement to the request of a map that spreads the model (then the CPU until the map is known)."""
    import torch

    from .placement import PlacementRequest, parse_device_map

    target = parse_device_map(options.device_map, **options.placement_options)
    if isinstance(target, PlacementRequest):
        options.placement, options.device = target, torch.device("cpu")
    else:
        options.device = target
