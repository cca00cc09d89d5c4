"""Training batches that mix synthetic brains with real labelled scans.

Synthetic brains (``synthesis/``) are what make the model robust to contrast, resolution and artefacts; they
also teach it the labelling convention of the label maps they are drawn from. A few real scans labelled by
another convention (FreeSurfer's aseg, say) teach that convention, but trained on alone they trade the
robustness away (a real-T1-only fine-tune lost 1.8 Dice points on an inverted-contrast probe). Mixing keeps
both: each batch comes whole from the real scans with probability ``labelled_fraction``, else from the
synthetic generator, so the synthetic share keeps anchoring the weights while the real share moves the
boundaries the two conventions draw differently.

The real scans are read, checked and brought to the network grid exactly as fine-tuning pairs are
(``labelled_scans.load_pair``), and sampled with its light augmentation (``PairSampler``).
"""
from __future__ import annotations

import torch

from .labelled_scans import PairSampler, load_pair


class _EitherSource:
    """``batch(batch_size, rng)`` as the synthetic generator's: each batch comes whole from ``second`` with
    probability ``share`` (one draw from ``rng`` first), else from ``first``. ``sources`` are ``first``'s: the
    label frequencies that weighted losses are built from."""

    def __init__(self, first, second, share: float, refusal: str):
        if not 0.0 < share < 1.0:
            raise ValueError(refusal.format(share=share))
        self._first, self._second, self._share = first, second, share
        self.sources = first.sources

    def batch(self, batch_size: int, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        source = self._second if float(torch.rand(1, generator=rng)) < self._share else self._first
        return source.batch(batch_size, rng)


class MixedSampler(_EitherSource):
    """Synthetic brains, or with probability ``labelled_fraction`` patches of real labelled scans."""

    def __init__(self, synthetic, labelled, labelled_fraction: float):
        super().__init__(synthetic, labelled, labelled_fraction, "labelled fraction must lie strictly between 0 "
                         "and 1, got {share}; use 0 for synthetic brains only")
        self.synthetic, self.labelled, self.labelled_fraction = synthetic, labelled, labelled_fraction


class SyntheticMixture(_EitherSource):
    """Synthetic brains from two groups of label maps: full-head maps (the anatomy around the brain, so
    skull-on images stay covered) and brain-only maps drawn FreeSurfer's way (``fs_label_maps/``: the labelling
    convention users compare with), the latter with probability ``brain_share``. The loss's label weights stay
    those of the full-head maps the base model was trained with, so a continued run keeps its weighting."""

    def __init__(self, full_head, brain_only, brain_share: float):
        super().__init__(full_head, brain_only, brain_share, "the brain-only maps' share must lie strictly between "
                         "0 and 1, got {share}; leave out the brain-only maps for full-head maps only")
        self.full_head, self.brain_only, self.brain_share = full_head, brain_only, brain_share


class StrippedOrSkullOn(_EitherSource):
    """Synthetic brains from the brain-only maps: as they are (skull-stripped-looking images), or with probability
    ``composite_share`` placed inside a full-head map (``synthesis/composite_heads.py``: skull-on images drawn
    FreeSurfer's way)."""

    def __init__(self, brain_only, composites, composite_share: float):
        super().__init__(brain_only, composites, composite_share, "the composite heads' share must lie strictly "
                         "between 0 and 1, got {share}; use --composite-heads 0 for brain-only maps as they are")
        self.brain_only, self.composites, self.composite_share = brain_only, composites, composite_share


def mixed_sampler(synthetic, scans: list, patch_size, labelled_fraction: float, log=None,
                  soft_labels: bool = False, rotation_deg: float = 0.0, scaling: float = 0.0) -> tuple:
    """(sampler, loaded pairs) for ``scans`` = [(image path, labels path)] mixed into ``synthetic``; with
    ``soft_labels`` the real scans' targets are structure shares (``labelled_scans.soft_targets``);
    ``rotation_deg``/``scaling``: the real patches' random turn and scale (``PairSampler``)."""
    pairs = [load_pair(image, labels, log=log, soft_labels=soft_labels) for image, labels in scans]
    sampler = PairSampler(pairs, patch_size, rotation_deg=rotation_deg, scaling=scaling)
    return MixedSampler(synthetic, sampler, labelled_fraction), pairs
