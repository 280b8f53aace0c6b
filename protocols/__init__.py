"""Shipped protocol files (TOML); see docs/protocols.md."""
