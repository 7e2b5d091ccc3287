"""Peers' own test suites, vendored unchanged, run against warpload."""
