"""Layer 6, the `warpload` command line: `main` parses and dispatches, one module per subcommand
(`generate`, `inspect`; `bench` runs warpload.bench). It may import every layer below it."""
