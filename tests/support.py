"""What several test files share: small versions of the shipped spaces, and
batch norms that look trained."""

from pathlib import Path

import torch

from nasdsl.space.derivation import replace_path, split_path

SPACES = Path(__file__).resolve().parent.parent / "spaces"

# small versions of the shipped spaces, so a forward pass costs milliseconds
SMALL = {"nb201": {"C": 4, "N": 1}, "mobilenetv3": {"resolution": 64, "width": 0.5}, "resnet": {"resolution": 32},
         "darts": {"C": 4, "layers": 5}, "hnb201": {"C": 4, "resolution": 8},
         "mobilenet3_mt": {"resolution": 28, "in_channels": 1, "num_classes": 10, "width": 0.5, "max_depth": 2},
         "superresnet": {"resolution": 28, "in_channels": 1, "C": 8, "blocks": 2},
         "regnet": {"resolution": 32, "num_classes": 10},
         "vit": {"resolution": 16, "patch": 4, "in_channels": 1, "num_classes": 10, "width": 0.125, "head_dim": 8},
         "unet": {"resolution": 16, "in_channels": 1, "num_classes": 3, "base": 4, "max_depth": 3}}


def look_trained(module, seed: int = 0, min_scale: float = 0.5):
    """`module` in eval mode with batch norms whose scales, shifts and running
    statistics are away from their defaults (and distinct per channel), as after
    training: inherited and fresh values then differ, and scales rank channels."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)) and m.affine:
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + min_scale)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return module.eval()


def changed(d, changes: dict):
    """`d`'s root with the values at some paths replaced (not yet checked against a space)."""
    root = d.root
    for path, value in changes.items():
        root = replace_path(root, split_path(path), value)
    return root
