"""Segmentation losses on softmax probabilities for SegLossBrain (plain torch; no Slicer, Qt or VTK).

Every loss exists as a function and as an ``nn.Module``; all take logits ``[B, C, *spatial]`` and a
target given as integer labels ``[B, *spatial]`` / ``[B, 1, *spatial]`` or one-hot ``[B, C, *spatial]``.
Use :func:`get_loss` to build one by name.
"""
from .compound import DiceCELoss, DiceFocalLoss, dice_ce_loss, dice_focal_loss
from .crossentropy import (
    CrossEntropyLoss,
    WeightedCrossEntropyLoss,
    cross_entropy_loss,
    weighted_cross_entropy_loss,
)
from .dice import (
    DiceLoss,
    GeneralizedDiceLoss,
    IoULoss,
    LogDiceLoss,
    dice_loss,
    generalized_dice_loss,
    iou_loss,
    log_dice_loss,
)
from .explog import ExpLogLoss, exp_log_loss
from .focal import FocalLoss, focal_loss
from .registry import LOSSES, describe_losses, get_loss, loss_parameters
from .sensitivity_specificity import SensitivitySpecificityLoss, sensitivity_specificity_loss
from .tversky import FocalTverskyLoss, TverskyLoss, focal_tversky_loss, tversky_loss
from .weights import label_frequencies, label_weights_from_frequencies, ratio_label_weights

__all__ = [
    "LOSSES", "get_loss", "loss_parameters", "describe_losses",
    "label_frequencies", "label_weights_from_frequencies", "ratio_label_weights",
    "DiceLoss", "LogDiceLoss", "GeneralizedDiceLoss", "IoULoss",
    "CrossEntropyLoss", "WeightedCrossEntropyLoss", "ExpLogLoss", "FocalLoss",
    "TverskyLoss", "FocalTverskyLoss", "SensitivitySpecificityLoss", "DiceCELoss", "DiceFocalLoss",
    "dice_loss", "log_dice_loss", "generalized_dice_loss", "iou_loss",
    "cross_entropy_loss", "weighted_cross_entropy_loss", "exp_log_loss", "focal_loss",
    "tversky_loss", "focal_tversky_loss", "sensitivity_specificity_loss", "dice_ce_loss", "dice_focal_loss",
]
