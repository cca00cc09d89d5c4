"""Equality with MONAI where MONAI implements the same loss (MONAI is a test-only dependency).

MONAI is configured with ``to_onehot_y=True, softmax=True`` (``use_softmax=True`` for the focal loss) and
``smooth_nr = smooth_dr`` equal to our single ``smooth``."""
import pytest
import torch

from SegLossBrainLib import losses as L

monai_losses = pytest.importorskip("monai.losses")

C = 4
SMOOTH = 1e-5
TOL = 1e-5


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(11)
    logits = torch.randn(2, C, 4, 5, 6, generator=g) * 3
    target = torch.randint(0, C, (2, 1, 4, 5, 6), generator=g)
    target[1][target[1] == 3] = 1  # sample 1 lacks class 3: exercises the absent-class handling
    return logits, target


def assert_close(ours, theirs):
    assert torch.allclose(ours.float(), theirs.float(), atol=TOL, rtol=TOL), (ours, theirs)


def monai_kwargs(**extra):
    return dict(to_onehot_y=True, softmax=True, smooth_nr=SMOOTH, smooth_dr=SMOOTH, **extra)


@pytest.mark.parametrize("include_background", [True, False])
def test_dice(batch, include_background):
    logits, target = batch
    theirs = monai_losses.DiceLoss(include_background=include_background, **monai_kwargs())(logits, target)
    assert_close(L.DiceLoss(include_background=include_background, smooth=SMOOTH)(logits, target), theirs)
    theirs_none = monai_losses.DiceLoss(include_background=include_background, reduction="none",
                                        **monai_kwargs())(logits, target)
    ours_none = L.dice_loss(logits, target, include_background=include_background, reduction="none")
    assert_close(ours_none, theirs_none.reshape(ours_none.shape))


def test_iou_equals_monai_jaccard_with_half_smooth(batch):
    logits, target = batch
    smooth = 1e-3
    theirs = monai_losses.DiceLoss(jaccard=True, to_onehot_y=True, softmax=True, smooth_nr=smooth,
                                   smooth_dr=smooth)(logits, target)
    assert_close(L.IoULoss(smooth=smooth / 2)(logits, target), theirs)


@pytest.mark.parametrize("include_background", [True, False])
def test_generalized_dice(batch, include_background):
    logits, target = batch
    theirs = monai_losses.GeneralizedDiceLoss(include_background=include_background, **monai_kwargs())(logits, target)
    assert_close(L.GeneralizedDiceLoss(include_background=include_background, smooth=SMOOTH)(logits, target), theirs)


def test_dice_ce(batch):
    logits, target = batch
    theirs = monai_losses.DiceCELoss(**monai_kwargs())(logits, target)
    assert_close(L.DiceCELoss(smooth=SMOOTH)(logits, target), theirs)
    theirs = monai_losses.DiceCELoss(include_background=False, lambda_dice=0.7, lambda_ce=0.3,
                                     **monai_kwargs())(logits, target)
    ours = L.DiceCELoss(include_background=False, lambda_dice=0.7, lambda_ce=0.3, smooth=SMOOTH)(logits, target)
    assert_close(ours, theirs)


@pytest.mark.parametrize("include_background", [True, False])
def test_tversky(batch, include_background):
    logits, target = batch
    theirs = monai_losses.TverskyLoss(alpha=0.3, beta=0.7, include_background=include_background,
                                      **monai_kwargs())(logits, target)
    ours = L.TverskyLoss(include_background=include_background, smooth=SMOOTH)(logits, target)
    assert_close(ours, theirs)


@pytest.mark.parametrize("alpha", [None, 0.25, [0.1, 0.2, 0.3, 0.4]])
def test_focal(batch, alpha):
    logits, target = batch
    monai_focal = monai_losses.FocalLoss(to_onehot_y=True, use_softmax=True, gamma=2.0, alpha=alpha)
    # MONAI averages its [B, C, *spatial] map over classes as well as voxels, i.e. divides by C
    assert_close(L.FocalLoss(gamma=2.0, alpha=alpha)(logits, target), C * monai_focal(logits, target))
    monai_none = monai_losses.FocalLoss(to_onehot_y=True, use_softmax=True, alpha=alpha, reduction="none")
    assert_close(L.focal_loss(logits, target, alpha=alpha, reduction="none"), monai_none(logits, target).sum(1))


def test_dice_focal(batch):
    logits, target = batch
    dice = monai_losses.DiceLoss(**monai_kwargs())(logits, target)
    focal = monai_losses.FocalLoss(to_onehot_y=True, use_softmax=True, gamma=2.0)(logits, target)
    ours = L.DiceFocalLoss(lambda_dice=0.6, lambda_focal=0.4, smooth=SMOOTH)(logits, target)
    assert_close(ours, 0.6 * dice + 0.4 * C * focal)


def test_cross_entropy_equals_torch(batch):
    logits, target = batch
    labels = target[:, 0]
    assert_close(L.CrossEntropyLoss()(logits, target), torch.nn.functional.cross_entropy(logits, labels))
    w = torch.tensor([0.2, 1.0, 3.0, 0.5])
    # our weighted terms are averaged over voxels (torch divides by the summed weights of the voxels instead)
    torch_terms = torch.nn.functional.cross_entropy(logits, labels, weight=w, reduction="none")
    assert_close(L.WeightedCrossEntropyLoss(label_weights=w)(logits, target), torch_terms.mean())
