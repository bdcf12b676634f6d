"""Data packaged with restarter: the GPU price catalog (gpu_prices.json, provenance in PRICES.md)."""
