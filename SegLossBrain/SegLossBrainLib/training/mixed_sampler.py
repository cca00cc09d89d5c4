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


class MixedSampler:
    """``batch(batch_size, rng)`` as the synthetic generator's, from either source; ``sources`` are the
    synthetic generator's (label frequencies for weighted losses come from the label maps)."""

    def __init__(self, synthetic, labelled, labelled_fraction: float):
        if not 0.0 < labelled_fraction < 1.0:
            raise ValueError(f"labelled fraction must lie strictly between 0 and 1, got {labelled_fraction}; "
                             "use 0 for synthetic brains only")
        self.synthetic, self.labelled, self.labelled_fraction = synthetic, labelled, labelled_fraction
        self.sources = synthetic.sources

    def batch(self, batch_size: int, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        source = self.labelled if float(torch.rand(1, generator=rng)) < self.labelled_fraction else self.synthetic
        return source.batch(batch_size, rng)


def mixed_sampler(synthetic, scans: list, patch_size, labelled_fraction: float, log=None,
                  soft_labels: bool = False) -> tuple:
    """(sampler, loaded pairs) for ``scans`` = [(image path, labels path)] mixed into ``synthetic``; with
    ``soft_labels`` the real scans' targets are structure shares (``labelled_scans.soft_targets``)."""
    pairs = [load_pair(image, labels, log=log, soft_labels=soft_labels) for image, labels in scans]
    return MixedSampler(synthetic, PairSampler(pairs, patch_size), labelled_fraction), pairs
