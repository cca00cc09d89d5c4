"""The most probable class of every voxel and its probability, in numpy, for probabilities [C, ...]."""
from __future__ import annotations

import numpy as np


def class_maximum(probabilities) -> tuple[np.ndarray, np.ndarray]:
    """(maximum probability, index of the first class reaching it) per voxel, as ``torch.max(dim=0)``: float32
    and uint8 arrays of the spatial shape. ``probabilities``: a numpy array or a CPU torch tensor [C, ...].
    A loop over the classes: ``np.argmax`` over the first axis of a channel-first array walks memory with a stride
    of a whole volume, several times slower."""
    probabilities = np.asarray(probabilities)
    best = probabilities[0].astype(np.float32, copy=True)
    labels = np.zeros(best.shape, dtype=np.uint8)
    higher = np.empty(best.shape, dtype=bool)
    for index in range(1, probabilities.shape[0]):
        np.greater(probabilities[index], best, out=higher)  # strictly greater: the first maximal class wins ties
        np.copyto(best, probabilities[index], where=higher)
        labels[higher] = index
    return best, labels
