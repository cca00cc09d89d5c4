"""The review page in a real browser (headless Chromium): it shows the case, draws hippocampus in the product's
colour exactly where the labelmap has it, and a paint stroke made through the page changes exactly the voxels
under the brush in the saved correction. The geometry the tests expect is computed here from the files, not
asked of the app."""
from __future__ import annotations

import time

import numpy as np
import pytest
import SimpleITK as sitk
from review_helpers import (open_case_page, ReviewServer, browser, click_id, element_pixels, nearest_structure,  # noqa: F401
                            review_env, settled_pixels, small_case, text_of, three_d_view, view_images,
                            voxel_to_pixel, wait_for)
from scipy import ndimage

HIPPOCAMPUS, VENTRAL_DC = 14, 18
CEREBRAL_CORTEX = 2
BRUSH_RADIUS_MM = 3.0  # the app's default brush: 6 mm across, on the shown slice


@pytest.fixture(scope="module")
def server(small_case, tmp_path_factory):  # noqa: F811
    tmp = tmp_path_factory.mktemp("review")
    image, labels, _ = small_case
    running = ReviewServer([image, "--labels", labels, "--pairs-dir", tmp / "pairs"], review_env(tmp),
                           tmp / "review.log")
    running.pairs = tmp / "pairs"
    yield running
    running.stop()


@pytest.fixture(scope="module")
def page(server, browser):  # noqa: F811
    return open_case_page(browser, server.url)


def test_page_shows_the_case_its_volumes_and_the_model(page, small_case):  # noqa: F811
    assert text_of(page, "case-title").endswith("case")
    table = text_of(page, "volume-table")
    labels = small_case[2]
    expected_ml = (labels == HIPPOCAMPUS).sum() / 1000.0  # 1 mm voxels
    row = next(line for line in table.splitlines() if line.startswith("hippocampus"))
    assert float(row.split()[1]) == pytest.approx(expected_ml, abs=0.006)
    assert "active model" in text_of(page, "model-text")
    assert len(view_images(page)) >= 4  # axial, coronal, sagittal and 3D


def test_axial_view_draws_hippocampus_where_the_labelmap_has_it(page, small_case):  # noqa: F811
    labels = small_case[2]
    centre_slice = labels[labels.shape[0] // 2]  # the axial view opens on the volume's middle slice
    pixels = settled_pixels(view_images(page)[0])
    structure = nearest_structure(pixels)
    hippocampus = centre_slice == HIPPOCAMPUS
    inside = ndimage.binary_erosion(hippocampus, np.ones((3, 3)))  # away from the outline and partial pixels
    outside = ~ndimage.binary_dilation(hippocampus, iterations=3)
    size_ij = (centre_slice.shape[1], centre_slice.shape[0])
    seen = {}
    for name, mask in (("inside", inside), ("outside", outside)):
        j, i = np.nonzero(mask)
        x, y = voxel_to_pixel(i, j, pixels.shape, size_ij)
        keep = (x >= 0) & (x < pixels.shape[1]) & (y >= 0) & (y < pixels.shape[0])
        seen[name] = structure[y[keep].astype(int), x[keep].astype(int)]
    assert inside.sum() >= 50 and len(seen["inside"]) == inside.sum()  # every interior voxel is on screen
    assert (seen["inside"] == HIPPOCAMPUS).mean() > 0.97, np.bincount(seen["inside"])
    assert (seen["outside"] == HIPPOCAMPUS).mean() < 0.002, np.bincount(seen["outside"])


def test_3d_view_shows_the_segments_as_surfaces(page):
    """Built when the case opens: the 3D view shows the outer structures in their colours, not only the grey
    volume rendering (the crop is seen from the front: cortex, caudate, brainstem...)."""
    assert "when the case opened" in text_of(page, "surfaces-status")
    counts = np.bincount(nearest_structure(settled_pixels(three_d_view(page))).ravel(), minlength=20)
    assert counts[CEREBRAL_CORTEX] > 2000, counts
    assert (counts[1:] > 300).sum() >= 3, counts


def test_paint_stroke_through_the_page_changes_exactly_the_brushed_voxels(page, server, small_case):  # noqa: F811
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    labels = small_case[2]
    k = labels.shape[0] // 2
    cj, ci = labels.shape[1] // 2, labels.shape[2] // 2
    assert labels[k, cj, ci] == VENTRAL_DC  # the test case: the brush lands in ventral DC
    item = page.execute_script(  # the segment list shows each name in a (read-only) text field
        "return [...document.querySelectorAll('.v-list-item')].find("
        "e => [...e.querySelectorAll('input')].some(i => i.value === 'hippocampus'));")
    item.click()
    wait_for(lambda: "v-list-item--active" in item.get_attribute("class"), what="hippocampus selected")
    page.find_element(By.XPATH, "//button[.//i[contains(@class,'mdi-brush')]]").click()
    time.sleep(1.0)
    axial = view_images(page)[0]
    before = settled_pixels(axial)
    # hover until the server draws the brush there: the paint effect is active and the server keeps up (on a busy
    # machine a stroke sent earlier can reach the view before the effect does and paint nothing)
    ActionChains(page).move_to_element_with_offset(axial, 20, 20).pause(0.3).move_to_element(axial).perform()
    wait_for(lambda: not np.array_equal(element_pixels(axial), before), timeout=30, what="the brush in the view")
    ActionChains(page).click_and_hold().pause(0.3).release().pause(0.5).perform()
    settled_pixels(axial)
    click_id(page, "save-correction")
    wait_for(lambda: "Saved" in text_of(page, "save-status"), what="Save correction")

    saved_path = server.pairs / "case_labels.nrrd"
    saved = sitk.ReadImage(str(saved_path))
    image = sitk.ReadImage(str(small_case[0]))
    assert saved.GetSize() == image.GetSize() and np.allclose(saved.GetOrigin(), image.GetOrigin())
    assert (server.pairs / "case_image.nrrd").is_file()
    after = sitk.GetArrayFromImage(saved)
    changed = np.argwhere(after != labels)
    assert len(changed) and set(changed[:, 0]) == {k}, "only the shown slice is painted"
    assert set(after[after != labels].tolist()) == {HIPPOCAMPUS}
    # voxel centres within the brush (minus the page's pixel and the voxel's own half-size) must all be painted,
    # none clearly outside it may be
    jj, ii = np.mgrid[0:labels.shape[1], 0:labels.shape[2]]
    distance = np.hypot(jj - cj, ii - ci)
    painted = after[k] != labels[k]
    assert painted[distance <= BRUSH_RADIUS_MM - 0.6].all()
    assert not painted[distance >= BRUSH_RADIUS_MM + 1.0].any()
    assert "as saved" in text_of(page, "surfaces-status")  # the 3D view's surfaces rebuilt from the saved labels
    # the original labels are untouched
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(small_case[1]))), labels)
