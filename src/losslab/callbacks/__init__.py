"""Callbacks: checkpointing, gradient statistics/monitoring/health/clipping, curriculum."""
