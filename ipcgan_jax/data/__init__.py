"""Data: sources, builders, pipelines and the synthetic aging faces."""
