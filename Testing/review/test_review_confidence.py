"""A scan opened without labels: the page segments it with the active model, exactly as ``seglossbrain segment``
does (volumes and mean confidence per structure), and its confidence map is an overlay switched on and off from
the side panel: on, the axial view turns magenta where the model was less than 90 % sure and stays as it was where
it was surer; off, the view is as before. What to expect is read from a direct ``seglossbrain segment`` run."""
from __future__ import annotations


import numpy as np
import pytest
from review_helpers import (open_case_page, ReviewServer, at_voxels, browser, click_id, review_env, segment_with_cli,  # noqa: F401
                            settled_pixels, small_case, text_of, view_images, volume_table, wait_for)
from scipy import ndimage

from SegLossBrainLib.labels import load_label_table
from SegLossBrainLib.models.store import DEFAULT_MODEL_NAME

SHOWN_BELOW = 0.9  # the overlay's threshold (SegLossBrainReview.overlay)


@pytest.fixture(scope="module")
def server(small_case, tmp_path_factory):  # noqa: F811
    tmp = tmp_path_factory.mktemp("confidence")
    running = ReviewServer([small_case[0], "--pairs-dir", tmp / "pairs"], review_env(tmp), tmp / "review.log")
    running.expected = segment_with_cli(small_case[0], tmp / "cli", review_env(tmp))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def page(server, browser):  # noqa: F811
    return open_case_page(browser, server.url)


def test_page_segments_the_scan_as_the_command_does(page, server):
    expected = server.expected
    assert f"labels: {DEFAULT_MODEL_NAME}" in text_of(page, "model-text")
    shown = volume_table(page)
    table = load_label_table()
    means = {s.name: float(expected["confidence"][expected["labels"] == s.index].mean())
             for s in table.structures[1:] if (expected["labels"] == s.index).any()}
    assert set(means) <= set(shown)
    for name, ml in expected["volumes"].items():
        assert shown[name][0] == pytest.approx(ml, abs=0.006), name
    for name, mean in means.items():
        assert float(shown[name][1]) == pytest.approx(mean, abs=0.006), name


def magenta(pixels: np.ndarray) -> np.ndarray:
    """How much more red and blue than green a pixel has."""
    return (pixels[..., 0] + pixels[..., 2]) / 2 - pixels[..., 1]


def test_confidence_overlay_tints_the_unsure_voxels_and_goes_away(page, server):
    confidence = server.expected["confidence"]
    k = confidence.shape[0] // 2  # the axial view opens on the middle slice
    axial = view_images(page)[0]
    before = settled_pixels(axial)
    click_id(page, "confidence-switch")
    wait_for(lambda: not np.array_equal(settled_pixels(axial), before), what="the overlay drawn")
    on = settled_pixels(axial)

    cross = ndimage.generate_binary_structure(2, 1)
    # voxels whose neighbours share their side of the threshold: their centres are drawn well inside them
    unsure = ndimage.binary_erosion(confidence[k] < SHOWN_BELOW - 0.05, cross)
    sure = ndimage.binary_erosion(confidence[k] > SHOWN_BELOW + 0.05, cross)
    assert unsure.sum() >= 50 and sure.sum() >= 50, "too few voxels on the slice to tell"
    tinted = magenta(at_voxels(on, unsure)) > 20
    assert tinted.mean() > 0.97, f"{tinted.mean():.3f} of the unsure voxels tinted magenta"
    # the sure voxels show the grey scan: no tint, and no segment fill (outlines only while the overlay is on)
    assert (np.ptp(at_voxels(before, sure), axis=-1) > 6).mean() > 0.5, "the segments' fill was shown before"
    grey = np.ptp(at_voxels(on, sure), axis=-1) <= 6
    assert grey.mean() > 0.95, f"{1 - grey.mean():.3f} of the sure voxels coloured"

    click_id(page, "confidence-switch")
    wait_for(lambda: np.array_equal(settled_pixels(axial), before), what="the view as before the overlay")
