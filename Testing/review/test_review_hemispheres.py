"""A ``--hemispheres`` labelmap (FreeSurfer aseg values, each paired structure split left/right) in the page: the
segment list names left and right, each side in its structure's colour; the axial view draws hippocampus colour
where the file has left (and right) hippocampus; saved back, the sides merge into the file's structures.

Every segment of the table is listed, also one the file lacks (e.g. left cerebellum white matter on this crop):
``labels_to_segmentation`` makes them all on purpose, so a reviewer can paint a structure the model missed. The
test therefore checks that such a segment is empty (the saved correction equals the file), not that it is absent.
"""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
from review_helpers import (open_case_page, ReviewServer, at_voxels, browser, click_id, nearest_structure, review_env,  # noqa: F401
                            settled_pixels, small_case, text_of, view_images, wait_for)
from scipy import ndimage

from SegLossBrainLib.labels import load_label_table, output_segments

HIPPOCAMPUS = 14
LEFT_HIPPOCAMPUS, RIGHT_HIPPOCAMPUS = 17, 53  # FreeSurfer aseg values
SEGMENT_LIST = ("return [...document.querySelectorAll('.v-list-item')].map(e => [e.querySelector('input')?.value, "
                "[...e.querySelectorAll('*')].map(c => getComputedStyle(c).color)]).filter(x => x[0]);")


@pytest.fixture(scope="module")
def sided(small_case, tmp_path_factory):  # noqa: F811
    """The crop segmented by ``seglossbrain segment --hemispheres``: (path, aseg values (k, j, i))."""
    tmp = tmp_path_factory.mktemp("sided")
    path = tmp / "sided.nii.gz"
    subprocess.run([sys.executable, "-m", "SegLossBrainLib.cli", "segment", str(small_case[0]), str(path),
                    "--hemispheres", "--force", "--device", "cpu"], env=review_env(tmp), check=True,
                   capture_output=True, timeout=300)
    return path, sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


@pytest.fixture(scope="module")
def server(small_case, sided, tmp_path_factory):  # noqa: F811
    tmp = tmp_path_factory.mktemp("review-sided")
    running = ReviewServer([small_case[0], "--labels", sided[0], "--pairs-dir", tmp / "pairs"], review_env(tmp),
                           tmp / "review.log")
    running.pairs = tmp / "pairs"
    yield running
    running.stop()


@pytest.fixture(scope="module")
def page(server, browser):  # noqa: F811
    return open_case_page(browser, server.url)


def test_segment_list_names_left_and_right_in_their_colours(page, sided):
    values = sided[1]
    present = set(np.unique(values).tolist()) - {0}
    segments = output_segments(load_label_table(), hemispheres=True)
    assert {LEFT_HIPPOCAMPUS, RIGHT_HIPPOCAMPUS} <= present
    listed = wait_for(lambda: (lambda rows: rows if len(rows) >= len(segments) else None)(
        dict(page.execute_script(SEGMENT_LIST))), what="the segment list")
    assert set(listed) == {s.name for s in segments}  # every structure, by side: a missed one can be painted
    for segment in segments:
        if segment.value in present:
            assert "rgb({}, {}, {})".format(*segment.color) in listed[segment.name], segment.name
    assert "Left hippocampus" in listed and "Right hippocampus" in listed and "hippocampus" not in listed


def test_axial_view_draws_left_hippocampus_where_the_file_has_it(page, sided):
    values = sided[1]
    centre = values[values.shape[0] // 2]  # the axial view opens on the volume's middle slice
    structure = nearest_structure(settled_pixels(view_images(page)[0]))
    for side in (LEFT_HIPPOCAMPUS, RIGHT_HIPPOCAMPUS):
        inside = ndimage.binary_erosion(centre == side, np.ones((3, 3)))  # away from outlines and partial pixels
        assert inside.sum() >= 20, side
        seen = at_voxels(structure, inside)
        assert (seen == HIPPOCAMPUS).mean() > 0.97, (side, np.bincount(seen))
    either = np.isin(centre, (LEFT_HIPPOCAMPUS, RIGHT_HIPPOCAMPUS))
    outside = ~ndimage.binary_dilation(either, iterations=3)
    assert (at_voxels(structure, outside) == HIPPOCAMPUS).mean() < 0.002


def test_saved_sides_merge_into_the_files_structures(page, server, sided):
    """Nothing painted: the saved correction is the file's labels with the sides merged, so the segments the
    file lacks (listed above) hold no voxel."""
    click_id(page, "save-correction")
    wait_for(lambda: "Saved" in text_of(page, "save-status"), what="Save correction")
    saved = sitk.GetArrayFromImage(sitk.ReadImage(str(server.pairs / "case_labels.nrrd")))
    merged, convention = load_label_table().to_index_labels(sided[1])
    assert convention == "freesurfer"
    assert np.array_equal(saved, merged)
