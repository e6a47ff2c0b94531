"""Native (C) kernels, compiled on first use, with a torch fallback everywhere (see build.py)."""
