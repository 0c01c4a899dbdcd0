"""Limits the compiler's users set from the CLI, kept apart from torch (the CLI starts without it)."""

MAX_SUPERNET_PARAMS = 100_000_000  # 400 MB of float32 weights, before gradients and optimiser state
