"""AutoModelForCausalLM.from_config: a randomly initialised model for a config, as transformers builds one."""
from __future__ import annotations

import copy
from typing import Any, Optional

from ..errors import ArchitectureNotSupportedError
from ..models.config import PretrainedConfig, config_for_model
from ..models.registry import ARCHITECTURES, CAUSAL_LM_CLASSES
from . import transformers_backend
from .weights import resolve_dtype


def model_from_config(config: Any, *model_args: Any, dtype: Any = None, model_class: Optional[type] = None,
                      attn_implementation: Optional[str] = None, trust_remote_code: Optional[bool] = None,
                      **kwargs: Any) -> Any:
    """The causal LM of `config` (a warpload config, or a transformers one, converted), weights drawn as
    transformers initialises them: normal(0, initializer_range) for linear and embedding weights (GPT-2's
    residual projections scaled by 1/sqrt(2 * n_layer)), zero biases, unit norms, a zero padding row, then
    tied. The parameters are allocated once on the CPU in `dtype` (default torch's default dtype; "auto" is
    config.dtype), never on the meta device. Other keywords go to the model constructor. A config the built-in
    models cannot build goes to transformers' from_config when transformers is installed. The same seed does
    not give transformers' values: its constructors draw from the generator before its init does.
    Raises ArchitectureNotSupportedError without a class for the config, ValueError for a non-float dtype.
    """
    import torch

    if not isinstance(config, PretrainedConfig):
        if not (hasattr(config, "to_dict") and hasattr(config, "model_type")):
            raise TypeError(f"from_config needs a config object (warpload's or transformers'), got {type(config)}")
        config = config_for_model(**config.to_dict())
    config = copy.deepcopy(config)
    cls = model_class if model_class is not None else CAUSAL_LM_CLASSES.get(config.model_type)
    requested = dtype if dtype not in (None, "auto") else (
        getattr(config, "dtype", None) if dtype == "auto" else None) or torch.get_default_dtype()
    torch_type = resolve_dtype(requested, config, None, {}, getattr(cls, "__name__", config.model_type))
    if cls is None or not isinstance(config, cls.config_class) or cls.unsupported_features(config) or (
            attn_implementation not in (None, "sdpa")):
        return _with_transformers(config, model_args, torch_type, attn_implementation, trust_remote_code, kwargs)
    with torch.device("meta"):
        model = cls(config, *model_args, **kwargs)
    initialise(model, torch_type)
    model.config.dtype = torch_type
    return model


def initialise(model: Any, dtype: Any) -> None:
    """Allocates every parameter of a meta-built model on the CPU (floating ones in `dtype`), draws it with
    init_parameter in state-dict order, ties, and computes the buffers."""
    from .load_state import place

    tied = model.tied_weights()
    keys = [name for name, _ in model.named_parameters() if name not in tied]
    place(model, {}, {}, keys, dtype)
    for key in keys:
        model.init_parameter(key)
    model.tie_weights()
    model.reset_buffers("cpu")


def _with_transformers(config: PretrainedConfig, model_args: tuple, dtype: Any, attn_implementation: Optional[str],
                       trust_remote_code: Optional[bool], kwargs: dict[str, Any]) -> Any:
    if not transformers_backend.is_available():
        raise ArchitectureNotSupportedError(
            f"warpload's built-in models cannot build model_type {config.model_type!r} (built-in architectures: "
            f"{', '.join(sorted(ARCHITECTURES))}); {transformers_backend.INSTALL_HINT} to build it with "
            "transformers' class")
    import transformers

    fields = config.to_dict()
    hf_config = transformers.AutoConfig.for_model(fields.pop("model_type"), **fields)
    options = {"attn_implementation": attn_implementation} if attn_implementation is not None else {}
    if trust_remote_code is not None:
        options["trust_remote_code"] = trust_remote_code
    return transformers.AutoModelForCausalLM.from_config(hf_config, *model_args, dtype=dtype, **options, **kwargs)
