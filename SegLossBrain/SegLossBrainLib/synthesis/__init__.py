"""Synthetic training pairs (image, target) drawn from whole-head label maps."""
