"""safetensors' Python tests (huggingface/safetensors bindings/python/tests, Apache-2.0, see LICENSE), unchanged."""
