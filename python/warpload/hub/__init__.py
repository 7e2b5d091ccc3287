"""Layer 1, the Hub: `resolve` turns a repo id into a cached snapshot folder holding exactly the files a load
needs (huggingface_hub underneath, its cache shared), `hashes` checks LFS blobs from the bytes as they are
written, `remote_code` fetches a config's `auto_map` modules at `code_revision`. It may import only the base
modules (errors, constants, _fileio); it knows no model and no format."""
