"""Layer 5, beside loading: the tokenizer without transformers. `auto` resolves a folder or repo id (through the
Hub layer) and builds a `fast.FastTokenizer` on tokenizer.json with the `tokenizers` package; `settings` reads
tokenizer_config.json and the legacy files as transformers 5 does; `encoding` holds BatchEncoding and the padding
and truncation rules; `chat` renders Jinja2 chat templates in transformers' sandbox; `saving` writes the files
back. It may import only the Hub and the base modules (errors, constants, _fileio); never transformers."""
