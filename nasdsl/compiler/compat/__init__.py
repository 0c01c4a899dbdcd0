"""Bridges to other libraries' models (torchvision)."""
