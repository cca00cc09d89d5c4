"""Losses by name, for the training configuration, the UI and the model metadata."""
from __future__ import annotations

import inspect
from typing import Any, Dict, List, Tuple

from torch import nn

from .compound import DiceCELoss, DiceFocalLoss
from .crossentropy import CrossEntropyLoss, WeightedCrossEntropyLoss
from .dice import DiceLoss, GeneralizedDiceLoss, IoULoss, LogDiceLoss
from .explog import ExpLogLoss
from .focal import FocalLoss
from .sensitivity_specificity import SensitivitySpecificityLoss
from .tversky import FocalTverskyLoss, TverskyLoss

# name -> (class, one-line description); the order is the order shown to users
_ENTRIES: Dict[str, Tuple[type, str]] = {
    "explog": (ExpLogLoss, "Exponential logarithmic loss, 0.8 (-ln Dice)^0.3 + 0.2 weighted (-ln p)^0.3 (Wong 2018)"),
    "dice": (DiceLoss, "Linear soft Dice loss, mean over classes of 1 - Dice (Milletari 2016)"),
    "logdice": (LogDiceLoss, "Logarithmic Dice loss, mean over classes of (-ln Dice)^gamma (Wong 2018)"),
    "gdl": (GeneralizedDiceLoss, "Generalised Dice loss with 1/volume^2 class weights (Sudre 2017)"),
    "ce": (CrossEntropyLoss, "Categorical cross-entropy, mean over voxels"),
    "wce": (WeightedCrossEntropyLoss, "Weighted cross-entropy, label-frequency or per-sample ratio weights"),
    "focal": (FocalLoss, "Softmax focal loss, -(1 - p)^gamma ln p (Lin 2017)"),
    "tversky": (TverskyLoss, "Tversky loss, alpha 0.3 on false positives, beta 0.7 on false negatives (Salehi 2017)"),
    "focal_tversky": (FocalTverskyLoss, "Focal Tversky loss, (1 - Tversky index)^0.75 (Abraham 2019)"),
    "sensitivity_specificity": (
        SensitivitySpecificityLoss,
        "Sensitivity-specificity loss, squared errors inside / outside each class, r = 0.05 (Brosch 2015)",
    ),
    "iou": (IoULoss, "Soft IoU (Jaccard) loss, mean over classes of 1 - IoU (Rahman 2016)"),
    "dice_ce": (DiceCELoss, "Dice loss + cross-entropy"),
    "dice_focal": (DiceFocalLoss, "Dice loss + softmax focal loss"),
}

LOSSES: Dict[str, type] = {name: entry[0] for name, entry in _ENTRIES.items()}


def _lookup(name: str) -> type:
    key = str(name).strip().lower().replace("-", "_")
    if key not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid names: {', '.join(LOSSES)}")
    return LOSSES[key]


def _signature_defaults(cls: type) -> Dict[str, Any]:
    parameters = inspect.signature(cls.__init__).parameters
    return {
        name: param.default
        for name, param in parameters.items()
        if name != "self" and param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY)
    }


def loss_parameters(name: str) -> Dict[str, Any]:
    """Constructor parameters of the loss ``name`` with their defaults (a fresh dict)."""
    return dict(_signature_defaults(_lookup(name)))


def get_loss(name: str, **params: Any) -> nn.Module:
    """Build the loss ``name`` (case-insensitive, '-' or '_') with ``params`` overriding its defaults.

    Raises:
        ValueError: for an unknown name (listing the valid ones) or an unknown parameter (naming it and
            listing the loss's parameters); invalid values raise the loss's own ValueError.
    """
    cls = _lookup(name)
    known = _signature_defaults(cls)
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {', '.join(unknown)} for loss {name!r}; valid parameters: {', '.join(known)}"
        )
    return cls(**params)


def describe_losses() -> List[Tuple[str, str]]:
    """(name, one-line description) for every registered loss."""
    return [(name, entry[1]) for name, entry in _ENTRIES.items()]
