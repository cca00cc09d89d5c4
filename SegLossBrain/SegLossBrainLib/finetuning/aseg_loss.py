"""The fine-tuning loss for FreeSurfer-labelled cases: background and CSF counted as one class.

aseg labels only a few thousand voxels of CSF and leaves sulcal and extra-cerebral CSF at 0, where the model says
CSF. Taught as it is, a fine-tune on aseg pairs spends itself unlearning CSF (the largest disagreement by far)
and moves the cortex with it, and no score against aseg counts CSF. So for aseg pairs the loss sees 19 classes:
the model's background and CSF probabilities summed (log-sum-exp of their logits, which is exactly that sum
after the softmax) against aseg's background and CSF together. What the model says about CSF is left as the base
model had it; every scored structure is learnt as before.
"""
from __future__ import annotations

import torch
from torch import nn

from ..labels import CSF_INDEX


def merge_csf_into_background(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits [B, C-1, ...], targets) with class CSF_INDEX folded into class 0 and the classes above it moved down."""
    def fold(values: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
        return torch.cat([first, values[:, 1:CSF_INDEX], values[:, CSF_INDEX + 1:]], dim=1)

    logits = fold(logits, torch.logsumexp(logits[:, [0, CSF_INDEX]], dim=1, keepdim=True))
    if targets.dim() == logits.dim():  # soft or one-hot targets [B, C, ...]: the two channels' shares summed
        return logits, fold(targets, targets[:, :1] + targets[:, CSF_INDEX:CSF_INDEX + 1])
    targets = torch.where(targets == CSF_INDEX, torch.zeros_like(targets), targets)
    return logits, targets - (targets > CSF_INDEX).to(targets.dtype)


def without_csf(label_weights: list | None) -> list | None:
    """The label weights of the 19 merged classes (the merged class keeps background's weight)."""
    return None if label_weights is None else [w for i, w in enumerate(label_weights) if i != CSF_INDEX]


class CsfAsBackgroundLoss(nn.Module):
    """``inner`` (built for 19 classes) on logits and targets with CSF merged into background."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.inner(*merge_csf_into_background(logits, targets))
