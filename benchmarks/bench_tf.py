"""TensorFlow checkpoints: warpload vs h5py on a Keras tf_model.h5, and a tensor bundle vs a sequential read.

Writes (once, under ~/.cache/warpload/synthetic-tf-MODEL/) a GPT-2-shaped Keras `tf_model.h5` laid out
as TFGPT2LMHeadModel.save_pretrained lays it out, and an OpenAI-style TF1 tensor bundle of the same
weights (with the test-side bundle writer, tests/tf_bundle_writer.py). Then times, warm and cold page
cache, interleaved, medians, with `warpload.bench`'s harness:

- tf_model.h5: `load_checkpoint(from_tf=True)` (PyTorch names) vs h5py reading every dataset into
  numpy, next to a sequential read of the file;
- the bundle: `load_checkpoint(prefix)` (TF names) and `load_checkpoint(prefix, from_tf=True)` vs a
  sequential read of its data file (issue 5's goal: within 15 %).

    python benchmarks/bench_tf.py --model gpt2-medium --repeat 5
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import numpy as np

import warpload
from warpload.bench import harness as bench
from warpload.bench.synthetic import SHAPES, GPT2Shape, cache_dir, gpt2_tensor_shapes

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from tf_bundle_writer import write_bundle  # noqa: E402  (the test-side writer, on purpose)

KERAS_ROOT = "tfgpt2lm_head_model/transformer"
# transformers' GPT-2 PyTorch names -> Keras weight names (TFGPT2LMHeadModel) and OpenAI TF1 names.
KERAS_LEAVES = {"ln_1.weight": "ln_1/gamma", "ln_1.bias": "ln_1/beta", "ln_2.weight": "ln_2/gamma",
                "ln_2.bias": "ln_2/beta", "attn.c_attn.weight": "attn/c_attn/weight",
                "attn.c_attn.bias": "attn/c_attn/bias", "attn.c_proj.weight": "attn/c_proj/weight",
                "attn.c_proj.bias": "attn/c_proj/bias", "mlp.c_fc.weight": "mlp/c_fc/weight",
                "mlp.c_fc.bias": "mlp/c_fc/bias", "mlp.c_proj.weight": "mlp/c_proj/weight",
                "mlp.c_proj.bias": "mlp/c_proj/bias"}
TF1_LEAVES = {"ln_1.weight": "ln_1/g", "ln_1.bias": "ln_1/b", "ln_2.weight": "ln_2/g", "ln_2.bias": "ln_2/b",
              "attn.c_attn.weight": "attn/c_attn/w", "attn.c_attn.bias": "attn/c_attn/b",
              "attn.c_proj.weight": "attn/c_proj/w", "attn.c_proj.bias": "attn/c_proj/b",
              "mlp.c_fc.weight": "mlp/c_fc/w", "mlp.c_fc.bias": "mlp/c_fc/b",
              "mlp.c_proj.weight": "mlp/c_proj/w", "mlp.c_proj.bias": "mlp/c_proj/b"}


def keras_and_tf1_names(pt_name: str, shape: tuple[int, ...]) -> tuple[str, tuple[int, ...], str, tuple[int, ...]]:
    """(Keras name, Keras shape, TF1 name, TF1 shape) of one GPT-2 weight, as TF writes them."""
    rest = pt_name.removeprefix("transformer.")
    if rest in ("wte.weight", "wpe.weight"):
        return f"{KERAS_ROOT}/{rest[:3]}/embeddings:0", shape, f"model/{rest[:3]}", shape
    if rest.startswith("ln_f."):
        leaf = "gamma" if rest.endswith("weight") else "beta"
        return f"{KERAS_ROOT}/ln_f/{leaf}:0", shape, f"model/ln_f/{leaf[0]}", shape
    _, layer, leaf = rest.split(".", 2)
    keras_shape = (1, shape[0]) if leaf.endswith("bias") and "ln" not in leaf else shape
    tf1_shape = (1, *shape) if leaf.endswith("weight") and "ln" not in leaf else shape
    return (f"{KERAS_ROOT}/h_._{layer}/{KERAS_LEAVES[leaf]}:0", keras_shape,
            f"model/h{layer}/{TF1_LEAVES[leaf]}", tf1_shape)


def write_checkpoints(folder: str, shape: GPT2Shape) -> tuple[str, str]:
    """tf_model.h5 and model.ckpt (bundle prefix) with the same random weights; written once."""
    import h5py

    h5_path, prefix = os.path.join(folder, "tf_model.h5"), os.path.join(folder, "model.ckpt")
    if os.path.isfile(h5_path) and os.path.isfile(prefix + ".index"):
        return h5_path, prefix
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    bundle: dict[str, tuple[str, tuple[int, ...], bytes]] = {}
    tmp_h5 = h5_path + ".tmp"
    with h5py.File(tmp_h5, "w") as handle:
        handle.attrs["backend"] = "tensorflow"
        handle.attrs["keras_version"] = "2.15.0"
        handle.attrs["layer_names"] = [b"transformer"]
        group = handle.create_group("transformer")
        names = []
        for pt_name, pt_shape in gpt2_tensor_shapes(shape).items():
            keras_name, keras_shape, tf1_name, tf1_shape = keras_and_tf1_names(pt_name, pt_shape)
            value = rng.standard_normal(pt_shape, dtype=np.float32) * np.float32(0.02)
            group.create_dataset(keras_name, data=value.reshape(keras_shape))
            names.append(keras_name.encode())
            bundle[tf1_name] = ("F32", tf1_shape, value.tobytes())
        group.attrs["weight_names"] = names
    os.replace(tmp_h5, h5_path)
    write_bundle(prefix, bundle)
    return h5_path, prefix


def h5py_every_dataset(path: str) -> dict[str, Any]:
    import h5py

    values: dict[str, Any] = {}
    with h5py.File(path, "r") as handle:
        handle.visititems(lambda name, item: values.__setitem__(name, item[()])
                          if isinstance(item, h5py.Dataset) else None)
    return values


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(SHAPES), default="gpt2-medium")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    h5_path, prefix = write_checkpoints(os.path.join(cache_dir(), f"synthetic-tf-{args.model}"), SHAPES[args.model])
    data_path = prefix + ".data-00000-of-00001"
    settings = bench.Settings(repeat=args.repeat)
    groups = {
        h5_path: [bench.Case("warpload load_checkpoint(from_tf=True)",
                             lambda: warpload.load_checkpoint(h5_path, from_tf=True), h5_path),
                  bench.Case("h5py, every dataset into numpy", lambda: h5py_every_dataset(h5_path), h5_path)],
        data_path: [bench.Case("warpload load_checkpoint (TF names)",
                               lambda: warpload.load_checkpoint(prefix), data_path),
                    bench.Case("warpload load_checkpoint(from_tf=True)",
                               lambda: warpload.load_checkpoint(prefix, from_tf=True), data_path)],
    }
    for path, cases in groups.items():
        notes: list[str] = []
        timings = []
        for cache in bench.CACHE_STATES:
            timings += bench.measure([bench.read_limit_case(path), *cases], cache, settings, notes, path)
        report = bench.Report(path, os.path.getsize(path), settings, timings, notes, bench.machine_info(),
                              bench.package_versions())
        print(bench.format_report(report, markdown=True), "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
