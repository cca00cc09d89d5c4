"""Properties every loss must have: finite gradients under a saturated softmax, all-background patches,
batch = mean of samples, label / one-hot equivalence, shapes, the registry and the weight helpers."""
import math

import numpy as np
import pytest
import torch

from SegLossBrainLib import losses as L

C = 4
# every registered loss, plus variants whose numerics differ (gamma < 1, masks, weights, no background)
CONFIGS = [(name, {}) for name in L.LOSSES] + [
    ("logdice", {"gamma": 0.3}),
    ("logdice", {"gamma": 0.3, "ignore_absent": True, "include_background": False}),
    ("explog", {"ignore_absent": True}),
    ("explog", {"include_background": False, "label_weights": [0.0, 1.0, 2.0, 3.0]}),
    ("explog", {"gamma_dice": 0.1, "gamma_cross": 0.1}),
    ("focal", {"gamma": 0.5, "alpha": 0.25}),
    ("focal_tversky", {"ignore_absent": True, "include_background": False}),
    ("gdl", {"include_background": False}),
    ("gdl", {"ignore_absent": True}),
    ("wce", {"weighting": "sudre"}),
    ("wce", {"label_frequencies": [0.7, 0.2, 0.08, 0.02]}),
    ("dice", {"ignore_absent": True, "include_background": False}),
    ("dice_ce", {"ignore_absent": True, "label_weights": [0.5, 1.0, 1.0, 2.0]}),
    ("dice_focal", {"alpha": [0.1, 0.3, 0.3, 0.3]}),
    ("sensitivity_specificity", {"include_background": False}),
]
IDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in p.items())}" for n, p in CONFIGS]


def labels(shape=(2, 3, 4, 5), seed=0, high=C):
    return torch.randint(0, high, shape, generator=torch.Generator().manual_seed(seed))


def saturated_logits(target, scale, wrong=False):
    onehot = torch.nn.functional.one_hot(target, C).movedim(-1, 1).float()
    if wrong:
        onehot = onehot.roll(1, dims=1)
    return (scale * (2 * onehot - 1)).requires_grad_(True)


def assert_finite_loss_and_grad(loss_fn, logits, target):
    value = loss_fn(logits, target)
    assert torch.isfinite(value).all(), value
    value.sum().backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    return value


@pytest.mark.parametrize("name,params", CONFIGS, ids=IDS)
@pytest.mark.parametrize("scale", [1e4, 20.0, 60.0])  # 20: softmax == 1.0 but log_softmax != 0; 1e4: both exact
@pytest.mark.parametrize("wrong", [False, True])
def test_saturated_softmax_gives_finite_gradients(name, params, scale, wrong):
    target = labels()
    logits = saturated_logits(target, scale, wrong)
    assert torch.softmax(logits, 1).max() == 1.0  # the float32 softmax really saturates
    assert_finite_loss_and_grad(L.get_loss(name, **params), logits, target)


def test_explog_perfect_prediction_is_zero_with_finite_gradient():
    target = labels()
    logits = saturated_logits(target, 1e4)
    value = assert_finite_loss_and_grad(L.ExpLogLoss(gamma_dice=0.3, gamma_cross=0.3), logits, target)
    assert float(value.detach()) < 1e-5  # the floor of safe_pow only adds (1e-20)^0.3 = 1e-6
    assert float(logits.grad.abs().max()) == 0.0


def test_unguarded_formula_would_give_nan():
    # shows the saturated case is a real trap: the naive (-ln p)^0.3 yields NaN gradients
    target = labels()
    logits = saturated_logits(target, 1e4)
    onehot = torch.nn.functional.one_hot(target, C).movedim(-1, 1).float()
    naive = ((-torch.log_softmax(logits, 1)).pow(0.3) * onehot).sum(1).mean()
    naive.backward()
    assert torch.isnan(logits.grad).any()


def test_explog_near_perfect_gradient_is_finite_and_nonzero():
    target = labels()
    logits = saturated_logits(target, 3.0)  # confident but not saturated
    assert_finite_loss_and_grad(L.ExpLogLoss(), logits, target)
    assert logits.grad.abs().max() > 0


@pytest.mark.parametrize("name,params", CONFIGS, ids=IDS)
def test_all_background_patch(name, params):
    target = torch.zeros(2, 3, 4, 5, dtype=torch.long)
    logits = torch.randn(2, C, 3, 4, 5, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    assert_finite_loss_and_grad(L.get_loss(name, **params), logits, target)
    saturated = saturated_logits(target, 1e4)
    assert_finite_loss_and_grad(L.get_loss(name, **params), saturated, target)


@pytest.mark.parametrize("name,params", CONFIGS, ids=IDS)
def test_batch_mean_equals_mean_of_samples(name, params):
    target = labels(seed=2)
    target[1][target[1] == 3] = 0  # samples differ in which classes are present
    logits = torch.randn(2, C, 3, 4, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    loss = L.get_loss(name, **params)
    per_sample = [loss(logits[b:b + 1], target[b:b + 1]) for b in range(2)]
    assert float(loss(logits, target)) == pytest.approx(float(sum(per_sample) / 2), rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("name,params", CONFIGS, ids=IDS)
def test_label_and_one_hot_targets_agree(name, params):
    target = labels(seed=4)
    logits = torch.randn(2, C, 3, 4, 5, generator=torch.Generator().manual_seed(5))
    loss = L.get_loss(name, **params)
    reference = loss(logits, target)
    onehot = torch.nn.functional.one_hot(target, C).movedim(-1, 1)
    assert torch.equal(loss(logits, onehot), reference)
    assert torch.equal(loss(logits, onehot.float()), reference)
    assert torch.equal(loss(logits, target[:, None]), reference)
    assert torch.equal(loss(logits, target[:, None].float()), reference)


@pytest.mark.parametrize("name", list(L.LOSSES))
def test_2d_inputs_and_none_reduction_shapes(name):
    target = labels((3, 6, 5), seed=6)
    logits = torch.randn(3, C, 6, 5, generator=torch.Generator().manual_seed(7))
    none = L.get_loss(name, reduction="none")(logits, target)
    mean = L.get_loss(name)(logits, target)
    summed = L.get_loss(name, reduction="sum")(logits, target)
    expected = {
        "dice": (3, C), "logdice": (3, C), "iou": (3, C), "tversky": (3, C), "focal_tversky": (3, C),
        "sensitivity_specificity": (3, C), "gdl": (3,), "explog": (3,), "dice_ce": (3,), "dice_focal": (3,),
        "ce": (3, 6, 5), "wce": (3, 6, 5), "focal": (3, 6, 5),
    }[name]
    assert tuple(none.shape) == expected
    assert mean.ndim == 0 and summed.ndim == 0
    assert torch.allclose(mean, none.mean()) and torch.allclose(summed, none.sum())


def test_half_precision_logits_are_computed_in_float32():
    target = labels(seed=8)
    logits = torch.randn(2, C, 3, 4, 5, generator=torch.Generator().manual_seed(9))
    value = L.ExpLogLoss()(logits.bfloat16(), target)
    assert value.dtype == torch.float32
    assert float(value) == pytest.approx(float(L.ExpLogLoss()(logits.bfloat16().float(), target)), rel=1e-6)


def test_input_errors():
    logits = torch.zeros(1, C, 2, 2)
    with pytest.raises(ValueError, match="labels must lie"):
        L.dice_loss(logits, torch.full((1, 2, 2), C))
    with pytest.raises(ValueError, match="labels must lie"):
        L.dice_loss(logits, torch.full((1, 2, 2), -1))
    with pytest.raises(ValueError, match="fits neither"):
        L.dice_loss(logits, torch.zeros(1, 3, 2, 2))
    with pytest.raises(ValueError, match="does not match"):
        L.dice_loss(logits, torch.zeros(1, 2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        L.dice_loss(logits, torch.full((1, 1, 2, 2), 0.5))
    with pytest.raises(ValueError, match="at least 2 channels"):
        L.dice_loss(torch.zeros(1, 1, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="label_weights has 3 entries"):
        L.WeightedCrossEntropyLoss(label_weights=[1, 1, 1])(logits, torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="reduction"):
        L.DiceLoss(reduction="avg")
    with pytest.raises(ValueError, match="smooth"):
        L.LogDiceLoss(smooth=0.0)
    with pytest.raises(ValueError, match="label_weights"):
        L.ExpLogLoss(label_weights=[1.0, -1.0])
    with pytest.raises(ValueError, match="not both"):
        L.ExpLogLoss(label_weights=[1.0, 1.0], label_frequencies=[0.5, 0.5])
    with pytest.raises(ValueError, match="sudre"):
        L.WeightedCrossEntropyLoss(label_weights=[1.0, 1.0], weighting="sudre")


# ---- registry ---------------------------------------------------------------------------------------------

REQUIRED = ["dice", "logdice", "wce", "ce", "gdl", "explog", "focal", "tversky", "focal_tversky",
            "sensitivity_specificity", "iou", "dice_ce", "dice_focal"]


def test_registry_names_and_descriptions():
    assert set(REQUIRED) <= set(L.LOSSES)
    described = L.describe_losses()
    assert [n for n, _ in described] == list(L.LOSSES)
    assert all(isinstance(d, str) and d and "\n" not in d for _, d in described)


@pytest.mark.parametrize("name", REQUIRED)
def test_registry_round_trip(name):
    params = L.loss_parameters(name)
    loss = L.get_loss(name, **params)
    assert type(loss) is L.LOSSES[name]
    assert type(L.get_loss(name.upper().replace("_", "-"))) is L.LOSSES[name]
    params["reduction"] = "none"
    assert L.get_loss(name, **params).reduction == "none"
    assert "reduction" in L.loss_parameters(name) and L.loss_parameters(name)["reduction"] == "mean"


def test_registry_defaults():
    assert L.loss_parameters("explog")["w_dice"] == 0.8
    assert L.loss_parameters("explog")["w_cross"] == 0.2
    assert L.loss_parameters("explog")["gamma_dice"] == 0.3 and L.loss_parameters("explog")["smooth"] == 1.0
    assert (L.loss_parameters("tversky")["alpha"], L.loss_parameters("tversky")["beta"]) == (0.3, 0.7)
    assert L.loss_parameters("focal_tversky")["gamma"] == 0.75
    assert L.loss_parameters("focal")["gamma"] == 2.0
    assert L.loss_parameters("sensitivity_specificity")["r"] == 0.05
    assert L.loss_parameters("logdice")["gamma"] == 1.0


def test_registry_errors():
    with pytest.raises(ValueError) as err:
        L.get_loss("dicee")
    assert "dicee" in str(err.value) and "explog" in str(err.value) and "focal_tversky" in str(err.value)
    with pytest.raises(ValueError) as err:
        L.get_loss("dice", gamma=2.0, smoth=1.0)
    assert "gamma" in str(err.value) and "smoth" in str(err.value) and "smooth" in str(err.value)
    with pytest.raises(ValueError):
        L.loss_parameters("nope")


# ---- label weights -------------------------------------------------------------------------------------


def test_label_frequencies():
    maps = [np.array([[0, 0, 1], [1, 2, 0]]), torch.tensor([0, 0, 0, 3])]
    np.testing.assert_allclose(L.label_frequencies(maps, 5).numpy(), np.array([6, 2, 1, 1, 0]) / 10)
    np.testing.assert_allclose(L.label_frequencies(np.array([1, 1, 0, 1]), 2).numpy(), [0.25, 0.75])
    np.testing.assert_allclose(L.label_frequencies(iter([np.array([2.0, 0.0])]), 3).numpy(), [0.5, 0, 0.5])
    with pytest.raises(ValueError, match="outside"):
        L.label_frequencies([np.array([0, 5])], 5)


def test_label_weights_from_frequencies():
    w = L.label_weights_from_frequencies([0.5, 0.25, 0.25, 0.0])
    np.testing.assert_allclose(w.numpy(), [math.sqrt(2), 2.0, 2.0, 2.0])  # unseen label: the largest weight
    np.testing.assert_allclose(L.label_weights_from_frequencies([300, 100], power=1.0).numpy(), [4 / 3, 4.0])
    for bad in ([], [0.0, 0.0], [1.0, -1.0], [1.0, float("nan")]):
        with pytest.raises(ValueError):
            L.label_weights_from_frequencies(bad)


def test_ratio_label_weights():
    onehot = torch.nn.functional.one_hot(torch.tensor([[0, 0, 0, 1], [2, 2, 2, 2]]), 3).movedim(-1, 1).float()
    np.testing.assert_allclose(L.ratio_label_weights(onehot).numpy(), [[1 / 3, 3.0, 0.0], [0.0, 0.0, 0.0]])
