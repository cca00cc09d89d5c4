"""The one training loop, its validation, BatchNorm recalibration and training curves."""
