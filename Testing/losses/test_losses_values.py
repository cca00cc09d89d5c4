"""Loss values against expectations computed independently: by hand on a 4-voxel case, and with
explicit numpy formulas on small random 3D batches (float64, so agreement is to rounding)."""
import math

import numpy as np
import pytest
import torch

from SegLossBrainLib import losses as L

S = 1e-5  # the linear-Dice family's default smooth

# Two classes, four voxels (1D spatial). Class-1 logits ln3, 0, -ln3, ln3 against class-0 logit 0 give
# p1 = 0.75, 0.5, 0.25, 0.75 and p0 = 0.25, 0.5, 0.75, 0.25 exactly.
LN3 = math.log(3.0)
HAND_LOGITS = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [LN3, 0.0, -LN3, LN3]]], dtype=torch.float64)
HAND_TARGET = torch.tensor([[1, 1, 0, 0]])
# per class (0, 1): I = sum p r, P = sum p, R = sum r
I0, P0, R0 = 1.0, 1.75, 2.0
I1, P1, R1 = 1.25, 2.25, 2.0
# -ln p of the true label at each voxel: p = 0.75, 0.5, 0.75, 0.25
NLL = [math.log(4 / 3), math.log(2.0), math.log(4 / 3), math.log(4.0)]
P_TRUE = [0.75, 0.5, 0.75, 0.25]


def close(value, expected, tol=1e-9):
    assert float(value) == pytest.approx(expected, abs=tol, rel=tol)


def test_dice_by_hand():
    expected = ((1 - (2 * I0 + S) / (P0 + R0 + S)) + (1 - (2 * I1 + S) / (P1 + R1 + S))) / 2
    close(L.dice_loss(HAND_LOGITS, HAND_TARGET), expected)
    close(L.DiceLoss(include_background=False)(HAND_LOGITS, HAND_TARGET), 1 - (2 * I1 + S) / (P1 + R1 + S))
    close(expected, (1 - 2 / 3.75 + 1 - 2.5 / 4.25) / 2, 1e-5)  # the same, rounded by hand


def test_log_dice_and_explog_by_hand():
    d0, d1 = (2 * I0 + 1) / (P0 + R0 + 1), (2 * I1 + 1) / (P1 + R1 + 1)  # 3/4.75 and 3.5/5.25
    close(L.log_dice_loss(HAND_LOGITS, HAND_TARGET), (-math.log(d0) - math.log(d1)) / 2)
    close(L.LogDiceLoss(gamma=0.3)(HAND_LOGITS, HAND_TARGET), ((-math.log(d0)) ** 0.3 + (-math.log(d1)) ** 0.3) / 2)
    dice_term = ((-math.log(d0)) ** 0.3 + (-math.log(d1)) ** 0.3) / 2
    cross_term = sum(n ** 0.3 for n in NLL) / 4
    close(L.ExpLogLoss()(HAND_LOGITS, HAND_TARGET), 0.8 * dice_term + 0.2 * cross_term)
    weights = [1.0, 4.0]
    weighted = sum(weights[t] * n ** 0.3 for t, n in zip([1, 1, 0, 0], NLL)) / 4
    close(L.ExpLogLoss(label_weights=weights)(HAND_LOGITS, HAND_TARGET), 0.8 * dice_term + 0.2 * weighted)
    close(L.ExpLogLoss(w_dice=0.5, w_cross=0.5, gamma_dice=1, gamma_cross=1)(HAND_LOGITS, HAND_TARGET),
          0.5 * (-math.log(d0) - math.log(d1)) / 2 + 0.5 * sum(NLL) / 4)


def test_cross_entropies_by_hand():
    close(L.cross_entropy_loss(HAND_LOGITS, HAND_TARGET), sum(NLL) / 4)
    close(L.WeightedCrossEntropyLoss(label_weights=[1.0, 3.0])(HAND_LOGITS, HAND_TARGET),
          (3 * NLL[0] + 3 * NLL[1] + NLL[2] + NLL[3]) / 4)
    # frequencies 0.8 / 0.2 -> w = (1 / 0.8)^0.5, (1 / 0.2)^0.5
    w0, w1 = 1.25 ** 0.5, 5.0 ** 0.5
    close(L.WeightedCrossEntropyLoss(label_frequencies=[0.8, 0.2])(HAND_LOGITS, HAND_TARGET),
          (w1 * NLL[0] + w1 * NLL[1] + w0 * NLL[2] + w0 * NLL[3]) / 4)
    # Sudre weights with one class-1 voxel out of 4: w1 = 3/1, w0 = 1/3
    target = torch.tensor([[1, 0, 0, 0]])
    # true-label probabilities are unchanged (p1 = 0.75 at voxel 0; p0 = 0.5, 0.75, 0.25 at voxels 1-3)
    nll = [math.log(4 / 3), math.log(2.0), math.log(4 / 3), math.log(4.0)]
    expected = (3 * nll[0] + (nll[1] + nll[2] + nll[3]) / 3) / 4
    close(L.WeightedCrossEntropyLoss(weighting="sudre")(HAND_LOGITS, target), expected)


def test_focal_by_hand():
    close(L.focal_loss(HAND_LOGITS, HAND_TARGET), sum((1 - p) ** 2 * -math.log(p) for p in P_TRUE) / 4)
    alpha = [0.25, 0.75]
    expected = sum(alpha[t] * (1 - p) ** 2 * -math.log(p) for t, p in zip([1, 1, 0, 0], P_TRUE)) / 4
    close(L.FocalLoss(alpha=0.75)(HAND_LOGITS, HAND_TARGET), expected)
    close(L.FocalLoss(gamma=0)(HAND_LOGITS, HAND_TARGET), sum(NLL) / 4)


def test_tversky_iou_by_hand():
    ti0 = (I0 + S) / (I0 + 0.3 * (P0 - I0) + 0.7 * (R0 - I0) + S)  # 1 / 1.925
    ti1 = (I1 + S) / (I1 + 0.3 * (P1 - I1) + 0.7 * (R1 - I1) + S)  # 1.25 / 2.075
    close(ti1, 1.25 / 2.075, 1e-5)
    close(L.tversky_loss(HAND_LOGITS, HAND_TARGET), (2 - ti0 - ti1) / 2)
    close(L.focal_tversky_loss(HAND_LOGITS, HAND_TARGET), ((1 - ti0) ** 0.75 + (1 - ti1) ** 0.75) / 2)
    iou0, iou1 = (I0 + S) / (P0 + R0 - I0 + S), (I1 + S) / (P1 + R1 - I1 + S)  # 1 / 2.75, 1.25 / 3
    close(L.iou_loss(HAND_LOGITS, HAND_TARGET), (2 - iou0 - iou1) / 2)


def test_generalized_dice_by_hand():
    target = torch.tensor([[1, 0, 0, 0]])
    # class 0: I = 0.5 + 0.75 + 0.25, P = 1.75, R = 3, w = 1/9; class 1: I = 0.75, P = 2.25, R = 1, w = 1
    numer = 2 * (1.5 / 9 + 0.75) + S
    denom = (1.75 + 3) / 9 + (2.25 + 1) + S
    close(L.generalized_dice_loss(HAND_LOGITS, target), 1 - numer / denom)
    close(1 - numer / denom, 0.514706, 1e-5)


def test_sensitivity_specificity_by_hand():
    # class 1, inside voxels 0, 1: errors 0.25, 0.5; outside voxels 2, 3: 0.25, 0.75 (and mirrored for class 0)
    sens1, spec1 = (0.25 ** 2 + 0.5 ** 2) / (2 + S), (0.25 ** 2 + 0.75 ** 2) / (2 + S)
    sens0, spec0 = (0.25 ** 2 + 0.75 ** 2) / (2 + S), (0.25 ** 2 + 0.5 ** 2) / (2 + S)
    expected = (0.05 * sens0 + 0.95 * spec0 + 0.05 * sens1 + 0.95 * spec1) / 2
    close(L.sensitivity_specificity_loss(HAND_LOGITS, HAND_TARGET), expected)


def test_compounds_by_hand():
    dice = ((1 - (2 * I0 + S) / (P0 + R0 + S)) + (1 - (2 * I1 + S) / (P1 + R1 + S))) / 2
    close(L.DiceCELoss()(HAND_LOGITS, HAND_TARGET), dice + sum(NLL) / 4)
    focal = sum((1 - p) ** 2 * -math.log(p) for p in P_TRUE) / 4
    close(L.DiceFocalLoss(lambda_dice=2.0, lambda_focal=0.5)(HAND_LOGITS, HAND_TARGET), 2 * dice + 0.5 * focal)


def test_ignore_absent_by_hand():
    # three classes, class 2 absent from the target: its pair is dropped from the mean
    logits = torch.cat([HAND_LOGITS, torch.full((1, 1, 4), -1.0, dtype=torch.float64)], 1)
    p = torch.softmax(logits, 1)[0].numpy()
    r = np.stack([[0, 0, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0]]).astype(float)
    dice = (2 * (p * r).sum(1) + S) / (p.sum(1) + r.sum(1) + S)
    close(L.dice_loss(logits, HAND_TARGET), np.mean(1 - dice))
    close(L.dice_loss(logits, HAND_TARGET, ignore_absent=True), np.mean(1 - dice[:2]))
    none = L.dice_loss(logits, HAND_TARGET, ignore_absent=True, reduction="none")
    np.testing.assert_allclose(none.numpy(), [[1 - dice[0], 1 - dice[1], 0.0]], atol=1e-12)
    # generalised Dice: the absent class takes the largest present weight, or weight 0 when ignored
    w = np.zeros(3)
    w[:2] = 1 / r.sum(1)[:2] ** 2
    for ignore, w_absent in ((False, w[:2].max()), (True, 0.0)):
        ww = np.array([w[0], w[1], w_absent])
        expected = 1 - (2 * (ww * (p * r).sum(1)).sum() + S) / ((ww * (p.sum(1) + r.sum(1))).sum() + S)
        close(L.generalized_dice_loss(logits, HAND_TARGET, ignore_absent=ignore), expected)


# ---- numpy references on random 3D batches -------------------------------------------------------------


def np_softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def np_onehot(t, c):
    return np.moveaxis(np.eye(c)[t], -1, 1)


def np_overlap(p, r):
    ax = tuple(range(2, p.ndim))
    return (p * r).sum(ax), p.sum(ax), r.sum(ax)


def ref_classwise(terms, mask):
    if mask is None:
        return terms.mean()
    per_sample = [(t[m].sum() / max(m.sum(), 1)) for t, m in zip(terms, mask)]
    return np.mean(per_sample)


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 4, 3, 4, 5, generator=g, dtype=torch.float64) * 2
    target = torch.randint(0, 3, (2, 3, 4, 5), generator=g)  # class 3 absent everywhere
    target[1, 0] = 0
    target[1][target[1] == 2] = 0  # sample 1 lacks class 2 too
    return logits, target


@pytest.mark.parametrize("include_background", [True, False])
@pytest.mark.parametrize("ignore_absent", [False, True])
def test_overlap_losses_match_numpy(batch, include_background, ignore_absent):
    logits, target = batch
    p, r = np_softmax(logits.numpy()), np_onehot(target.numpy(), 4)
    inter, psum, rsum = np_overlap(p, r)
    if not include_background:
        inter, psum, rsum = inter[:, 1:], psum[:, 1:], rsum[:, 1:]
    mask = rsum > 0 if ignore_absent else None
    kw = dict(include_background=include_background, ignore_absent=ignore_absent)
    dice = (2 * inter + S) / (psum + rsum + S)
    close(L.dice_loss(logits, target, **kw), ref_classwise(1 - dice, mask))
    dice1 = (2 * inter + 1) / (psum + rsum + 1)
    close(L.log_dice_loss(logits, target, gamma=0.3, **kw), ref_classwise((-np.log(dice1)) ** 0.3, mask))
    iou = (inter + S) / (psum + rsum - inter + S)
    close(L.iou_loss(logits, target, **kw), ref_classwise(1 - iou, mask))
    ti = (inter + S) / (inter + 0.3 * (psum - inter) + 0.7 * (rsum - inter) + S)
    close(L.tversky_loss(logits, target, **kw), ref_classwise(1 - ti, mask))
    close(L.focal_tversky_loss(logits, target, **kw), ref_classwise((1 - ti) ** 0.75, mask))
    cross = (-np.log(p) * r).sum(1).reshape(2, -1).mean(1)  # CE per sample
    explog_cross = ((-np.log(p)) ** 0.3 * r).sum(1).reshape(2, -1).mean(1)
    dice_part = [ref_classwise((-np.log(dice1[b:b + 1])) ** 0.3, None if mask is None else mask[b:b + 1])
                 for b in range(2)]
    close(L.exp_log_loss(logits, target, **kw), np.mean(0.8 * np.array(dice_part) + 0.2 * explog_cross))
    lin_part = [ref_classwise(1 - dice[b:b + 1], None if mask is None else mask[b:b + 1]) for b in range(2)]
    close(L.dice_ce_loss(logits, target, **kw), np.mean(np.array(lin_part) + cross))


def test_gdl_and_ss_match_numpy(batch):
    logits, target = batch
    p, r = np_softmax(logits.numpy()), np_onehot(target.numpy(), 4)
    inter, psum, rsum = np_overlap(p, r)
    losses = []
    for b in range(2):
        w = np.where(rsum[b] > 0, 1 / np.maximum(rsum[b], 1) ** 2, 0.0)
        w = np.where(rsum[b] > 0, w, w.max())
        losses.append(1 - (2 * (w * inter[b]).sum() + S) / ((w * (psum[b] + rsum[b])).sum() + S))
    np.testing.assert_allclose(L.generalized_dice_loss(logits, target, reduction="none").numpy(), losses, rtol=1e-9)
    ax = (2, 3, 4)
    err = (r - p) ** 2
    terms = 0.05 * (err * r).sum(ax) / (r.sum(ax) + S) + 0.95 * (err * (1 - r)).sum(ax) / ((1 - r).sum(ax) + S)
    np.testing.assert_allclose(L.sensitivity_specificity_loss(logits, target, reduction="none").numpy(), terms,
                               rtol=1e-9)


def test_voxelwise_losses_match_numpy(batch):
    logits, target = batch
    p, r = np_softmax(logits.numpy()), np_onehot(target.numpy(), 4)
    w = np.array([0.5, 1.0, 2.0, 4.0])
    wce = (-np.log(p) * r * w[None, :, None, None, None]).sum(1)
    np.testing.assert_allclose(L.weighted_cross_entropy_loss(logits, target, label_weights=w, reduction="none"),
                               wce, rtol=1e-9)
    focal = (-(1 - p) ** 2 * np.log(p) * r).sum(1)
    np.testing.assert_allclose(L.focal_loss(logits, target, reduction="none"), focal, rtol=1e-9)
    close(L.focal_loss(logits, target, reduction="sum"), focal.sum())
    # Sudre weights per sample and class: (N - N_c) / N_c, 0 for absent classes
    n_c = r.sum((2, 3, 4))
    ws = np.where(n_c > 0, (60 - n_c) / np.maximum(n_c, 1), 0.0)
    sudre = (-np.log(p) * r * ws[:, :, None, None, None]).sum(1).mean()
    close(L.weighted_cross_entropy_loss(logits, target, weighting="sudre"), sudre)
