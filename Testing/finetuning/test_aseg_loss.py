"""aseg pairs fine-tune with CSF and background as one class (issue 31): the merged loss against a hand-computed
cross-entropy of the summed probabilities, and the switch as a fine-tune on aseg and index pairs records it."""
import numpy as np
import pytest
import torch
from test_finetune import INDEX_TO_ASEG, config, make_pair, phantom_arrays, store  # noqa: F401  (fixtures)

from SegLossBrainLib.finetuning.aseg_loss import CsfAsBackgroundLoss, merge_csf_into_background, without_csf
from SegLossBrainLib.finetuning.finetune import finetune
from SegLossBrainLib.labels import CSF_INDEX


def test_the_merged_cross_entropy_is_minus_log_of_the_summed_probability():
    torch.manual_seed(0)
    logits = torch.randn(2, 20, 3, 4, 5)
    targets = torch.randint(0, 20, (2, 3, 4, 5))
    targets[0, 0, 0, :3] = torch.tensor([0, CSF_INDEX, 19])
    probabilities = logits.softmax(1)
    merged = probabilities.clone()
    merged[:, 0] += merged[:, CSF_INDEX]
    merged[:, CSF_INDEX] = merged[:, 0]  # a target of either class scores p(background) + p(CSF)
    expected = -torch.log(merged.gather(1, targets[:, None])).mean()
    loss = CsfAsBackgroundLoss(torch.nn.CrossEntropyLoss())(logits, targets)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_soft_targets_fold_the_same_way_as_hard_ones():
    logits = torch.randn(1, 20, 2, 2, 2)
    hard = torch.randint(0, 20, (1, 2, 2, 2))
    soft = torch.nn.functional.one_hot(hard, 20).permute(0, 4, 1, 2, 3).float()
    _, folded_hard = merge_csf_into_background(logits, hard)
    _, folded_soft = merge_csf_into_background(logits, soft)
    assert torch.equal(folded_soft.argmax(1), folded_hard) and folded_soft.shape[1] == 19
    assert without_csf(list(range(20))) == [i for i in range(20) if i != CSF_INDEX]


def aseg_pair(folder, name, shift):
    _, index_labels = phantom_arrays(shift)
    aseg = np.zeros(index_labels.shape, np.int16)
    right = np.arange(48)[None, None, :] >= 24  # right-hemisphere values (41, 42, ...) make the convention plain
    for index, (left_value, right_value) in INDEX_TO_ASEG.items():
        aseg[(index_labels == index) & ~right] = left_value
        aseg[(index_labels == index) & right] = right_value
    return make_pair(folder, name, shift, labels=aseg)


@pytest.mark.parametrize("labels,merged", [("aseg", True), ("index", False)])
def test_only_aseg_pairs_fine_tune_with_csf_as_background(store, tmp_path, random_model_file, labels,  # noqa: F811
                                                          merged):
    pairs = [aseg_pair(tmp_path, f"a{i}", i) if labels == "aseg" else make_pair(tmp_path, f"i{i}", i)
             for i in range(2)]
    result = finetune(config(pairs, random_model_file, steps=2))
    assert result.metadata["finetune"]["csf_as_background"] is merged
