"""Counting multiply-accumulates as torch does, one way everywhere.

`torch.utils.flop_counter.FlopCounterMode` counts convolutions and matrix products,
but not the fused attention kernels torch picks on a CPU: under it, attention's
q k^T and attention x v products would count zero on one machine and not on
another; nor `nn.MultiheadAttention`'s fused fast path, which it takes in eval mode
(torchvision's ViT). Here attention runs on torch's math kernel and the fast path is
off, so its matrix products are counted and a primitive's MACs rule, a traced
model's and a benchmark's agree.
"""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def flop_counter():
    """FlopCounterMode (no display) with scaled dot-product attention on the math
    kernel and without nn.MultiheadAttention's fast path."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    fast = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            yield counter
    finally:
        torch.backends.mha.set_fastpath_enabled(fast)
