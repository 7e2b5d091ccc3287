"""from_pretrained's options: the caller's keywords checked once, before any file is read, into one record."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional, Union

from ..engine import devices
from ..engine.mapped import zero_copy_mode
from ..hub.resolve import HubOptions

if TYPE_CHECKING:
    import torch

BACKENDS = ("auto", "warpload", "transformers")

# transformers options accepted and ignored (the Hub's are popped by HubOptions).
IGNORED_OPTIONS = ("_fast_init", "weights_only", "disable_mmap", "offload_state_dict")
# transformers options warpload does not implement: passing one with a value raises NotImplementedError.
UNSUPPORTED_OPTIONS = ("quantization_config", "gguf_file", "tp_plan", "tp_size", "distributed_config", "device_mesh",
                       "key_mapping", "adapter_kwargs", "adapter_name", "max_memory", "offload_folder",
                       "offload_buffers", "use_kernels", "kernel_config", "load_in_8bit", "load_in_4bit",
                       "fusion_config")
DEVICE_MAP_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")


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
    # target_device(device_map), set once the Hub download has started: it imports torch, which then overlaps it.
    device: Optional["torch.device"] = None

    @property
    def fill_device(self) -> Any:
        """Where parameters are allocated: their final device when the engine fills it directly, else the CPU."""
        return self.device if devices.fills_directly(self.device) else "cpu"

    @classmethod
    def parse(cls, pretrained_model_name_or_path: Optional[Union[str, "os.PathLike[str]"]], model_args: tuple, *,
              dtype: Any, torch_dtype: Any, device_map: Any, backend: str, from_flax: bool,
              zero_copy: Union[None, bool, str], kwargs: dict[str, Any], **options: Any) -> "LoadOptions":
        """Checks the keywords (raising NotImplementedError, ValueError as from_pretrained documents) and pops the
        ignored, unsupported and Hub ones from `kwargs`."""
        _reject_unsupported(kwargs, from_flax)
        mapping = zero_copy_mode(zero_copy)
        if backend not in BACKENDS:
            raise ValueError(f"backend={backend!r}: choose one of {', '.join(BACKENDS)}")
        for option in IGNORED_OPTIONS:
            kwargs.pop(option, None)
        hub = HubOptions.pop_from(kwargs)
        skip_unsupported = bool(kwargs.pop("skip_unsupported", False))
        name = None if pretrained_model_name_or_path is None else os.fspath(pretrained_model_name_or_path)
        if options["state_dict"] is not None and name is not None:
            raise ValueError("`state_dict` cannot be passed together with a model name or a `gguf_file`. "
                             "Use one of the two loading strategies.")
        return cls(name=name, model_args=model_args, dtype=dtype if dtype is not None else torch_dtype,
                   device_map=device_map, backend=backend, zero_copy=mapping, hub=hub, kwargs=kwargs,
                   skip_unsupported=skip_unsupported, **options)


def _reject_unsupported(kwargs: dict[str, Any], from_flax: bool) -> None:
    if from_flax:
        raise NotImplementedError("from_flax=True: warpload cannot read Flax checkpoints; convert them to "
                                  "safetensors first")
    for option in UNSUPPORTED_OPTIONS:
        value = kwargs.pop(option, None)
        if value not in (None, False, {}):
            raise NotImplementedError(f"{option}= is not implemented by warpload; call "
                                      "transformers.AutoModelForCausalLM.from_pretrained for it")


def target_device(device_map: Any) -> "torch.device":
    """The one device a device_map names (transformers' accepted forms); several devices are not supported."""
    import torch

    if device_map is None:
        return torch.device("cpu")
    if isinstance(device_map, dict):
        devices = {str(device) for device in device_map.values()}
        if len(devices) != 1 or "disk" in devices:
            raise NotImplementedError(f"device_map={device_map!r} spreads the model over {sorted(devices)}; "
                                      "warpload places a model on one device: pass {'': device}")
        device_map = next(iter(device_map.values()))
    if isinstance(device_map, str) and device_map in DEVICE_MAP_STRATEGIES:
        raise NotImplementedError(f"device_map={device_map!r} needs an automatic placement plan, which warpload "
                                  "does not compute; pass one device such as 'cpu' or 'cuda:0'")
    if isinstance(device_map, int) and not isinstance(device_map, bool):
        if device_map < 0:
            raise ValueError("You can't pass device_map as a negative int. If you want to put the model on the cpu, "
                             "pass device_map = 'cpu'")
        return torch.device("cuda", device_map)
    try:
        return torch.device(device_map)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device_map={device_map!r}: when passing device_map as a string, the value needs to be a "
                         "device name (e.g. cpu, cuda:0)") from err
