"""Built-in causal-LM implementations (GPT-2, the Llama family) with transformers' module trees and key names."""
