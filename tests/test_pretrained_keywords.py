"""Every keyword transformers 5.24's from_pretrained takes, with warpload's behaviour for it: a table that fails
when the transformers pin moves and a keyword appears or goes; misspellings caught before any download."""
from __future__ import annotations

import inspect
import pickle
import re

import pytest
import torch
import transformers
from transformers.models.auto import auto_factory

from model_checkpoints import save_checkpoint, tiny_transformers_model
from warpload import AutoModelForCausalLM
from warpload.errors import UnsafeCheckpointError

LOADS = "loads"  # accepted with the value given, the model loads
UNSUPPORTED = NotImplementedError  # refused, naming the option and what to use instead

# keyword -> (a value a user passes, what warpload does with it). Hub options have their own tests (test_hub.py).
KEYWORDS = {
    "config": (None, LOADS), "cache_dir": (None, LOADS), "ignore_mismatched_sizes": (True, LOADS),
    "force_download": (False, LOADS), "local_files_only": (True, LOADS), "token": (None, LOADS),
    "revision": ("main", LOADS), "use_safetensors": (True, LOADS), "weights_only": (False, LOADS),
    "disable_mmap": (True, LOADS), "state_dict": (None, LOADS), "proxies": (None, LOADS),
    "tqdm_class": (object, LOADS), "output_loading_info": (True, LOADS), "_from_pipeline": ("text-generation", LOADS),
    "_from_auto": (True, LOADS), "dtype": ("auto", LOADS), "torch_dtype": (torch.float32, LOADS),
    "device_map": ("cpu", LOADS), "subfolder": ("", LOADS), "_commit_hash": ("0" * 40, LOADS),
    "variant": (None, LOADS), "generation_config": (None, LOADS), "trust_remote_code": (False, LOADS),
    "allow_all_kernels": (False, LOADS), "use_kernels": (False, LOADS), "kernel_config": (None, LOADS),
    "attn_implementation": ("sdpa", LOADS), "experts_implementation": ("eager", LOADS), "mirror": (None, LOADS),
    "_fast_init": (True, LOADS), "low_cpu_mem_usage": (True, LOADS), "from_tf": (False, LOADS),
    "from_flax": (False, LOADS), "offload_state_dict": (True, LOADS), "code_revision": (None, LOADS),
    "adapter_kwargs": ({}, LOADS), "adapter_name": ("default", LOADS),
    "quantization_config": ({"quant_method": "bitsandbytes", "load_in_8bit": True}, UNSUPPORTED),
    "gguf_file": ("model.gguf", UNSUPPORTED), "tp_plan": ("auto", UNSUPPORTED), "tp_size": (2, UNSUPPORTED),
    "distributed_config": ({"tp_size": 2}, UNSUPPORTED), "device_mesh": (object(), UNSUPPORTED),
    "key_mapping": ({"a": "b"}, UNSUPPORTED), "fusion_config": ({"qkv": True}, UNSUPPORTED),
    "max_memory": ({"cpu": "1GiB"}, LOADS), "offload_folder": ("offload", LOADS), "offload_buffers": (True, LOADS),
}
# max_memory, offload_folder and offload_buffers place a spread device_map (test_placement.py); without one they
# change nothing, as in transformers.
# adapter_name="default" is transformers' default, accepted as it changes nothing without an adapter.


def transformers_keywords() -> set[str]:
    """The keywords transformers 5.24's PreTrainedModel.from_pretrained and the Auto classes' take."""
    method = transformers.PreTrainedModel.from_pretrained
    source = inspect.getsource(method) + inspect.getsource(auto_factory._BaseAutoModelClass.from_pretrained)
    named = set(inspect.signature(method).parameters) - {"cls", "pretrained_model_name_or_path", "model_args",
                                                         "kwargs"}
    popped = set(re.findall(r'kwargs\.pop\("(\w+)"', source)) | set(re.findall(r'"(\w+)" in kwargs', source))
    dropped = {name for names in re.findall(r"for name in \[([^\]]*)\]", source)
               for name in re.findall(r'"(\w+)"', names)}
    return named | popped | dropped


def test_the_table_lists_every_transformers_keyword():
    assert transformers_keywords() == set(KEYWORDS)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return save_checkpoint(tiny_transformers_model("gpt2"), tmp_path_factory.mktemp("gpt2"))


@pytest.mark.parametrize("keyword", sorted(KEYWORDS))
def test_each_keyword_behaves_as_the_table_says(folder, keyword):
    value, expected = KEYWORDS[keyword]
    if expected is LOADS:
        loaded = AutoModelForCausalLM.from_pretrained(folder, **{keyword: value})
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        assert isinstance(model, torch.nn.Module)
    else:
        with pytest.raises(expected, match=keyword):
            AutoModelForCausalLM.from_pretrained(folder, **{keyword: value})


@pytest.mark.parametrize(("typo", "meant"), [("devce_map", "device_map"), ("trust_remote_cod", "trust_remote_code"),
                                             ("attn_implementaion", "attn_implementation"),
                                             ("low_cpu_mem_usge", "low_cpu_mem_usage")])
def test_a_misspelt_keyword_is_named_before_any_download(typo, meant):
    # A repo id that does not exist: the check must come before the Hub is asked.
    with pytest.raises(TypeError, match=rf"unexpected keyword argument '{typo}'; did you mean '{meant}'\?"):
        AutoModelForCausalLM.from_pretrained("org/does-not-exist", **{typo: "cpu"})


def test_a_keyword_that_is_no_config_field_is_named_before_the_weights(folder, monkeypatch):
    from warpload.loading import pretrained

    monkeypatch.setattr(pretrained, "checkpoint_records", lambda *args: pytest.fail("weights were read"))
    with pytest.raises(TypeError, match=r"'n_layr'.*GPT2Config; did you mean 'n_layer'\?"):
        AutoModelForCausalLM.from_pretrained(folder, n_layr=1)


def test_config_overrides_still_apply(folder):
    assert AutoModelForCausalLM.from_pretrained(folder, n_layer=1).config.n_layer == 1


def _is_mapped(tensor: torch.Tensor, path) -> bool:
    """Whether the tensor's memory lies in a mapping of `path` (from /proc/self/maps)."""
    address = tensor.untyped_storage().data_ptr()
    with open("/proc/self/maps") as maps:
        for line in maps:
            span, *rest = line.split()
            start, end = (int(part, 16) for part in span.split("-"))
            if start <= address < end:
                return rest[-1] == str(path)
    return False


def test_disable_mmap_copies_every_tensor(folder):
    weights = folder / "model.safetensors"
    mapped = AutoModelForCausalLM.from_pretrained(folder)
    assert any(_is_mapped(p, weights) for p in mapped.parameters())
    copied = AutoModelForCausalLM.from_pretrained(folder, disable_mmap=True)
    assert not any(_is_mapped(p, weights) for p in copied.parameters())
    with pytest.raises(ValueError, match="disable_mmap=True and zero_copy=True"):
        AutoModelForCausalLM.from_pretrained(folder, disable_mmap=True, zero_copy=True)


class _Payload:
    def __reduce__(self):
        return (print, ("ran code from the checkpoint",))


def test_weights_only_false_still_runs_no_pickled_code(tmp_path):
    model = tiny_transformers_model("gpt2")
    model.config.save_pretrained(tmp_path)
    state = dict(model.state_dict())
    with open(tmp_path / "pytorch_model.bin", "wb") as handle:
        torch.save({**state, "extra": _Payload()}, handle, pickle_protocol=pickle.DEFAULT_PROTOCOL)
    with pytest.raises(UnsafeCheckpointError, match=r"weights_only=False\) does not change this"):
        AutoModelForCausalLM.from_pretrained(tmp_path, weights_only=False)
    with pytest.raises(UnsafeCheckpointError) as plain:
        AutoModelForCausalLM.from_pretrained(tmp_path)
    assert "weights_only=False) does not change" not in str(plain.value)
