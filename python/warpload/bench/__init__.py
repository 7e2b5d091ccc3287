"""Layer 6, the benchmark harness: `harness` times warpload and its peers side by side (fresh processes, warm
and cold, next to the machine's read and memcpy limits); `synthetic` writes the GPT-2-shaped checkpoints the
demo and benchmarks load. It may import every layer below it."""
