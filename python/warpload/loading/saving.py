"""model.save_pretrained: config.json, generation_config.json and the weights, sharded with an index, as
transformers 5 writes them (file names, shard split, index JSON, safetensors metadata, tied weights once)."""
from __future__ import annotations

import json
import os
import re
from collections import defaultdict
from typing import TYPE_CHECKING, Any, Optional, Union

from .._fileio import write_atomically
from ..constants import (
    PYTORCH_INDEX_NAME,
    PYTORCH_WEIGHTS_NAME,
    SAFETENSORS_INDEX_NAME,
    SAFETENSORS_WEIGHTS_NAME,
)
from ..models.config import UPLOAD_REFUSAL, write_json_text

if TYPE_CHECKING:
    import torch

PathLike = Union[str, "os.PathLike[str]"]

# transformers' default max_shard_size in 5.x.
DEFAULT_MAX_SHARD_SIZE = "50GB"
_SHARD_NAME = re.compile(r"(.*?)-\d{5}-of-\d{5}")


def save_pretrained(model: Any, save_directory: PathLike, *, is_main_process: bool = True,
                    state_dict: Optional[dict[str, "torch.Tensor"]] = None, push_to_hub: bool = False,
                    max_shard_size: Union[int, str] = DEFAULT_MAX_SHARD_SIZE, safe_serialization: bool = True,
                    variant: Optional[str] = None, **kwargs: Any) -> None:
    """Saves `model` so that transformers' and warpload's from_pretrained load it back.

    Writes config.json (architectures and dtype set from the model, as transformers does),
    generation_config.json for a model that can generate, and the weights: model.safetensors
    (metadata {"format": "pt"}), or pytorch_model.bin with safe_serialization=False (transformers 4's
    torch.save format); `variant` names them model.<variant>.safetensors. Above `max_shard_size`
    (an int of bytes or "5GB", "500MB", as transformers parses it) the weights are split into
    model-00001-of-0000N.safetensors shards in state-dict order, with model.safetensors.index.json
    (total_size, total_parameters, weight_map); stale shards of an earlier save are removed. A
    parameter tied to another (GPT-2's lm_head) is written once in safetensors, under the name transformers
    keeps.
    `state_dict` replaces the model's tensors; `is_main_process=False` writes nothing (as on
    secondary ranks). Raises NotImplementedError for push_to_hub=True (warpload does not upload),
    NotADirectoryError when save_directory is a file, TypeError for unknown keywords.
    """
    if push_to_hub:
        raise NotImplementedError(UPLOAD_REFUSAL)
    unknown = set(kwargs) - {"token", "save_peft_format", "save_original_format"}
    if unknown:
        raise TypeError(f"save_pretrained() got unexpected keyword arguments: {', '.join(sorted(unknown))}")
    folder = os.fspath(save_directory)
    if os.path.isfile(folder):
        raise NotADirectoryError(f"{folder} is a file; save_pretrained writes a checkpoint into a folder")
    os.makedirs(folder, exist_ok=True)
    model.config.dtype = str(model.dtype).removeprefix("torch.")
    model.config.architectures = [type(model).__name__]
    if not is_main_process:
        return
    model.config.save_pretrained(folder)
    if model.can_generate() and getattr(model, "generation_config", None) is not None:
        save_generation_config(model.generation_config, folder)
    tensors = dict(model.state_dict() if state_dict is None else state_dict)
    if getattr(model, "load_timings", None) is not None:
        # transformers saves a model it loaded (one with weight conversions) in natural key order, one it built in
        # state-dict order; the order decides the shards.
        tensors = dict(sorted(tensors.items(), key=lambda item: natural_key(item[0])))
    if safe_serialization:  # safetensors refuses aliases; transformers 4's .bin kept both names, one storage
        tensors = without_tied_duplicates(tensors, model.tied_weights())
    save_weights(tensors, folder, safe_serialization=safe_serialization, variant=variant,
                 max_shard_size=max_shard_size, total_parameters=model.num_parameters())


def save_weights(tensors: dict[str, "torch.Tensor"], folder: str, *, safe_serialization: bool,
                 variant: Optional[str], max_shard_size: Union[int, str], total_parameters: int) -> None:
    """Writes `tensors` into `folder` as one file or shards with an index (see save_pretrained)."""
    # transformers' own split (huggingface_hub): state-dict order, a tensor above the limit alone in its shard.
    from huggingface_hub import split_torch_state_dict_into_shards

    weights_name = with_variant(SAFETENSORS_WEIGHTS_NAME if safe_serialization else PYTORCH_WEIGHTS_NAME, variant)
    stem, extension = weights_name.rsplit(".", 1)
    split = split_torch_state_dict_into_shards(tensors, filename_pattern=stem + "{suffix}." + extension,
                                               max_shard_size=max_shard_size)
    remove_stale_shards(folder, stem, set(split.filename_to_tensors))
    for filename, names in split.filename_to_tensors.items():
        shard = {name: tensors[name].contiguous() for name in names}
        path = os.path.join(folder, filename)
        if safe_serialization:
            write_safetensors(shard, path, metadata={"format": "pt"})
        else:
            write_torch_bin(shard, path)
    if split.is_sharded:
        index = {"metadata": {"total_parameters": total_parameters, **split.metadata},
                 "weight_map": split.tensor_to_filename}
        index_name = with_variant(SAFETENSORS_INDEX_NAME if safe_serialization else PYTORCH_INDEX_NAME, variant)
        write_json_text(os.path.join(folder, index_name), json.dumps(index, indent=2, sort_keys=True) + "\n")


def write_safetensors(tensors: dict[str, "torch.Tensor"], path: str, *, metadata: dict[str, str]) -> None:
    """The one writer of safetensors files here: warpload.save_file (safetensors' bytes, written by the engine
    to a temporary file renamed into place)."""
    from ..tensors import save_file

    save_file(tensors, path, metadata=metadata)


def write_torch_bin(tensors: dict[str, "torch.Tensor"], path: str) -> None:
    """A pytorch_model.bin as transformers 4 wrote it: torch.save's zip format, atomically."""
    import torch

    write_atomically(path, lambda tmp: torch.save(tensors, tmp))


def save_generation_config(generation_config: Any, folder: str) -> None:
    """generation_config.json as transformers 5 writes it (GenerationConfig.save_pretrained)."""
    generation_config.save_pretrained(folder)


def without_tied_duplicates(tensors: dict[str, "torch.Tensor"], tied: dict[str, str]) -> dict[str, "torch.Tensor"]:
    """`tensors` with each group of aliases (the same memory, shape and strides) reduced to one name: tied
    targets ({target: source}) go, as transformers' remove_tied_weights_from_state_dict drops them."""
    aliases: dict[tuple[Any, ...], list[str]] = defaultdict(list)
    for name, tensor in tensors.items():
        if tensor.device.type != "meta":
            aliases[(tensor.device, tensor.data_ptr(), tuple(tensor.shape), tensor.stride(), tensor.dtype)].append(name)
    dropped: set[str] = set()
    for names in aliases.values():
        if len(names) > 1:
            targets = sorted(name for name in names if name in tied)
            keep = [name for name in names if name not in tied] or targets[-1:]
            dropped.update(name for name in names if name not in keep[:1])
    return {name: tensor for name, tensor in tensors.items() if name not in dropped}


def natural_key(name: str) -> list[tuple[Any, ...]]:
    """transformers' dot_natural_key: dotted parts compared as numbers when numeric (h.2 before h.10), numeric
    suffixes too (shard_2 before shard_11), else as text; numbers first."""
    parts: list[tuple[Any, ...]] = []
    for part in name.split("."):
        text = part.rstrip("0123456789")
        digits = part[len(text):]
        if not text:
            parts.append((0, int(part)))
        else:
            parts.append((1, text, int(digits)) if digits else (1, text))
    return parts


def with_variant(file_name: str, variant: Optional[str]) -> str:
    """model.safetensors -> model.<variant>.safetensors; the index: model.safetensors.index.<variant>.json."""
    if not variant:
        return file_name
    parts = file_name.split(".")
    return ".".join(parts[:-1] + [variant] + parts[-1:])


def remove_stale_shards(folder: str, stem: str, keep: set[str]) -> None:
    """Deletes shards of an earlier save (stem-0000i-of-0000n.*) that this save does not rewrite."""
    for filename in os.listdir(folder):
        base = filename.replace(".bin", "").replace(".safetensors", "")
        path = os.path.join(folder, filename)
        if (filename.startswith(stem) and filename not in keep and os.path.isfile(path)
                and _SHARD_NAME.fullmatch(base) is not None):
            os.remove(path)

