"""Layer 4, the built-in causal LMs (GPT-2, the Llama family) with transformers' module trees and key names:
configs as plain data (`config`: config.json in, config out; `generation_config`), modeling, attention, rope,
generation (`generation` over `logits_processors`, `stopping`, `beam_search`), and the `registry` of
architectures. It may import only the base modules and torch: no Hub, no engine. The models' `from_pretrained`
classmethods reach loading/ through `warpload.loading.entry`, the one documented edge."""
