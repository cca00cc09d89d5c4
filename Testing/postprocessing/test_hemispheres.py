"""Left/right split: a phantom brain with a known, tilted mid-sagittal plane and a curved fissure on an oblique,
anisotropic grid; aseg values and side volumes; the CLI's --hemispheres outputs; the refusals."""
import csv

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import (BRAINSTEM, CORTEX, HIPPOCAMPUS, THIRD_VENTRICLE, TRUE_CENTRE, TRUE_FRAME, WM, fissure,
                      phantom_brain, rotation)
from SegLossBrainLib.labels import load_label_table, output_segments
from SegLossBrainLib.postprocessing.hemispheres import (HemisphereError, asymmetry_index, fit_midsagittal_plane,
                                                        side_volumes_ml, split_hemispheres)

def test_the_fitted_plane_is_the_phantoms_mid_plane():
    labels, _ = phantom_brain()
    plane = fit_midsagittal_plane(labels)
    true_normal = TRUE_FRAME[:, 0]
    angle = np.degrees(np.arccos(np.clip(plane.normal @ true_normal, -1, 1)))
    assert angle < 2.0
    # The fissure averages to x = 0 over the brain (sin is odd in y): the plane passes through the centre.
    assert abs((TRUE_CENTRE - plane.point) @ plane.normal) < 1.0


def test_each_hemisphere_follows_the_curved_fissure_not_the_plane():
    labels, head = phantom_brain()
    sided, _ = split_hemispheres(labels)
    merged = sitk.GetArrayFromImage(labels)
    values = sitk.GetArrayFromImage(sided)
    x, y = head[..., 0], head[..., 1]
    truly_left = x > fissure(y)
    # Where the bridge joins the hemispheres (within 10 mm of it) the two sides meet somewhere in the bridge's
    # width: the corpus callosum, which aseg does not give a side either.
    away_from_bridge = ~((np.abs(x - fissure(y)) < 8) & (np.abs(y) < 30) & (np.abs(head[..., 2]) < 15))
    for index, (left_value, right_value) in ((WM, (2, 41)), (CORTEX, (3, 42)), (HIPPOCAMPUS, (17, 53))):
        voxels = (merged == index) & away_from_bridge
        assert np.all(values[voxels & truly_left] == left_value)
        assert np.all(values[voxels & ~truly_left] == right_value)
    # Unpaired structures keep their one aseg value; background stays 0.
    assert set(np.unique(values[merged == THIRD_VENTRICLE])) == {14}
    assert set(np.unique(values[merged == BRAINSTEM])) == {16}
    assert np.all(values[merged == 0] == 0)
    # The plane alone would put the bent part of the fissure on the wrong side: the tissue step is what fixes it.
    plane_only, _ = split_hemispheres(labels, margin_mm=0.0)
    cortex = (merged == CORTEX) & away_from_bridge
    wrong_with_plane = np.count_nonzero(sitk.GetArrayFromImage(plane_only)[cortex & truly_left] == 42)
    assert wrong_with_plane > 100


def test_side_volumes_and_asymmetry_index():
    labels, _ = phantom_brain()
    sided, _ = split_hemispheres(labels)
    values = sitk.GetArrayFromImage(sided)
    voxel_ml = np.prod(labels.GetSpacing()) / 1000
    volumes = side_volumes_ml(sided)
    assert volumes["hippocampus"] == pytest.approx(((values == 17).sum() * voxel_ml, (values == 53).sum() * voxel_ml))
    assert "brainstem" not in volumes  # unpaired
    assert asymmetry_index(3.0, 1.0) == pytest.approx(1.0)  # (3 - 1) / 2
    assert asymmetry_index(2.0, 2.0) == 0.0 and np.isnan(asymmetry_index(0.0, 0.0))


def test_no_brain_structures_cannot_be_split():
    empty = sitk.Image([40, 40, 40], sitk.sitkUInt8)
    with pytest.raises(HemisphereError, match="left and right cannot be told"):
        split_hemispheres(empty)


def test_left_right_segments_carry_laterality_codes():
    segments = output_segments(load_label_table(), hemispheres=True)
    by_name = {s.name: s for s in segments}
    assert len(segments) == 14 * 2 + 5  # 14 paired structures, 5 unpaired (3rd/4th ventricle, brainstem, CSF, chiasm)
    assert by_name["Left hippocampus"].value == 17 and by_name["Right hippocampus"].value == 53
    assert by_name["Left hippocampus"].terminology["TypeModifier"].value == "7771000"
    assert by_name["Right cerebral white matter"].terminology["TypeModifier"].value == "24028007"
    assert by_name["brainstem"].value == 16 and by_name["optic chiasm"].value == 85
    assert len({s.value for s in segments}) == len(segments)


def test_cli_hemispheres_writes_aseg_values_and_side_volumes(tmp_path, random_model_file, labels_network):
    from conftest import brain_image
    from SegLossBrainLib.cli import main
    from SegLossBrainLib.imageio.volumes import write_image

    labels, head = phantom_brain()
    labels_network(labels)
    source = write_image(brain_image(labels), tmp_path / "t1.nrrd")
    out, volumes = tmp_path / "labels.seg.nrrd", tmp_path / "v.csv"
    assert main(["segment", str(source), str(out), "--model", str(random_model_file), "--device", "cpu",
                 "--hemispheres", "--volumes", str(volumes)]) == 0
    written = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
    header = sitk.ReadImage(str(out))
    names = {header.GetMetaData(f"Segment{n}_Name"): header.GetMetaData(f"Segment{n}_LabelValue") for n in range(33)}
    assert names["Left hippocampus"] == "17" and names["Right hippocampus"] == "53"
    # The phantom's hippocampi, far from the fissure, come back on their own side, through the whole pipeline.
    merged = sitk.GetArrayFromImage(labels)
    inner = (merged == HIPPOCAMPUS) & (np.linalg.norm(head - [26, 8, -14], axis=-1) < 5)
    assert inner.any() and np.all(written[inner] == 17)
    rows = {r["structure"]: r for r in csv.DictReader(open(volumes))}
    row = rows["hippocampus"]
    left, right = float(row["left_ml"]), float(row["right_ml"])
    voxel_ml = np.prod(labels.GetSpacing()) / 1000
    assert left == pytest.approx((written == 17).sum() * voxel_ml, abs=2e-3)
    assert left + right == pytest.approx(float(row["volume_ml"]), abs=2e-3)
    assert float(row["asymmetry_index"]) == pytest.approx((left - right) / ((left + right) / 2), abs=1e-3)
    assert rows["brainstem"]["left_ml"] == "" and "qc" in row


def test_cli_hemispheres_refused_with_a_table_without_sides(tmp_path, random_model_file, monkeypatch, capsys):
    from conftest import ROOT, phantom
    from SegLossBrainLib.cli import main
    from SegLossBrainLib.imageio.volumes import write_image

    resources = tmp_path / "Resources"
    resources.mkdir()
    lines = (ROOT / "Resources" / "SegLossBrainLabels.csv").read_text().splitlines()
    (resources / "SegLossBrainLabels.csv").write_text("\n".join(",".join(l.split(",")[:-2]) for l in lines) + "\n")
    (resources / "SegLossBrainVolumeRanges.csv").write_text(
        (ROOT / "Resources" / "SegLossBrainVolumeRanges.csv").read_text())
    monkeypatch.setenv("SEGLOSSBRAIN_RESOURCES", str(resources))
    load_label_table.cache_clear()
    try:
        image, _ = phantom(size=(60, 56, 40), spacing=(1.6, 1.7, 2.5))
        source = write_image(image, tmp_path / "t1.nrrd")
        out = tmp_path / "labels.nii.gz"
        code = main(["segment", str(source), str(out), "--model", str(random_model_file), "--device", "cpu",
                     "--force", "--hemispheres"])
        assert code == 2 and not out.exists()
        assert "FreeSurferLeft/FreeSurferRight" in capsys.readouterr().err
    finally:
        monkeypatch.undo()
        load_label_table.cache_clear()
