"""Segmentation networks, built by name. Importing this package loads no torch (the CPU engine reads the
layouts in ``wong2018_layout.py`` without it); building a network does."""
from __future__ import annotations

ARCHITECTURES = ("wong2018", "vnet")


def build_network(name: str = "wong2018", in_channels: int = 1, num_classes: int = 20, **options):
    """The network called ``name`` (``wong2018``: the paper's net; ``vnet``: Milletari 2016), a torch module."""
    if name == "wong2018":
        from .wong2018 import Wong2018Net

        return Wong2018Net(in_channels=in_channels, num_classes=num_classes, **options)
    if name == "vnet":
        from .vnet import VNet

        return VNet(in_channels=in_channels, num_classes=num_classes, **options)
    raise ValueError(f"unknown architecture {name!r}; choose one of {', '.join(ARCHITECTURES)}")


def size_multiple(name: str) -> int:
    """Spatial sizes the network accepts are multiples of this."""
    return 16
