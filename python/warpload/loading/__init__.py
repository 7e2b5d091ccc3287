"""Layer 5, loading a model: `pretrained.from_pretrained` (options -> resolve -> build -> fill -> finish), the
Auto classes (`auto`), matching checkpoint keys to parameters (`load_state`), transformers' classes for
architectures warpload does not build (`transformers_backend`), shards loaded as they download
(`shard_stream`), the progress line, device_map placement (`placement`; the pure `planner` over a
`module_tree`; `dispatch` and the CPU/disk `offload` hooks). It may import every layer below it; `entry` is
where the models' own `from_pretrained` classmethods land (the one import from models/ up into this package)."""
