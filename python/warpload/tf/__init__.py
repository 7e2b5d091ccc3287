"""Layer 1, TensorFlow checkpoints without TensorFlow: `checkpoint` finds the files (Keras h5 and its shards,
TF safetensors, TF1/TF2 bundles) and reads their records, `names` maps TF variable names and layouts to
PyTorch's (transformers' rules). It may import the base modules and the format readers; the engine turns its
records into tensors (engine.tf_tensors)."""
