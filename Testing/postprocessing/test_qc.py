"""Input QC (no brain -> exit 2 unless --force; brain cut by the field of view -> a warning naming the side) and
output QC per structure (volume / ICV outside the 20 training heads' range, low mean confidence)."""
import csv

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import SHARED_DATA, brain_image, needs_shared_data, phantom, phantom_brain
from SegLossBrainLib.cli import main
from SegLossBrainLib.imageio.volumes import write_image
from SegLossBrainLib.labels import load_label_table
from SegLossBrainLib.models.store import DEFAULT_MODEL_NAME
from SegLossBrainLib.paths import LABEL_MAPS
from SegLossBrainLib.postprocessing import qc
from SegLossBrainLib.resources import shipped_models_dir

SHIPPED = shipped_models_dir() / f"{DEFAULT_MODEL_NAME}.safetensors"


@pytest.mark.skipif(not SHIPPED.is_file(), reason="no shipped model")
def test_a_phantom_without_brain_is_refused_by_the_shipped_model(tmp_path, capsys):
    image, _ = phantom(size=(96, 96, 96), spacing=(1.5, 1.5, 1.5), origin=(-72.0, -72.0, -72.0))
    noisy = sitk.GetArrayFromImage(image) + np.random.default_rng(1).normal(0, 60, image.GetSize()).astype(np.float32)
    source = sitk.GetImageFromArray(noisy)
    source.CopyInformation(image)
    path = write_image(source, tmp_path / "ellipsoid.nii.gz")
    out, volumes = tmp_path / "labels.nii.gz", tmp_path / "v.csv"
    args = ["segment", str(path), str(out), "--model", str(SHIPPED), "--device", "cpu", "--volumes", str(volumes)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "no brain found" in err and "--force" in err and "head MR scan" in err
    assert not out.exists() and not volumes.exists()
    assert main(args + ["--force"]) == 0
    assert "no brain found" in capsys.readouterr().err and out.exists()


def test_empty_answer_is_no_brain_and_a_real_looking_one_passes(tmp_path, random_model_file, labels_network, capsys):
    labels, _ = phantom_brain()
    source = write_image(brain_image(labels), tmp_path / "t1.nrrd")
    labels_network(sitk.Image(labels.GetSize(), sitk.sitkUInt8))  # the network finds nothing
    out = tmp_path / "labels.nii.gz"
    assert main(["segment", str(source), str(out), "--model", str(random_model_file)]) == 2
    assert "found 0 mL of brain" in capsys.readouterr().err and not out.exists()
    labels_network(labels)
    assert main(["segment", str(source), str(out), "--model", str(random_model_file)]) == 0


@pytest.mark.parametrize("flip,cut_side", [(1.0, "right"), (-1.0, "left")])
def test_a_brain_cut_by_the_field_of_view_is_named(tmp_path, random_model_file, labels_network, capsys, flip,
                                                   cut_side):
    direction = np.diag([flip, 1.0, 1.0])  # LPS: index i runs to patient left, or with flip -1 to the right
    labels, _ = phantom_brain(direction=direction, spacing=(1.5, 1.5, 1.5), size=(100, 120, 90))
    labels_network(labels)
    whole = brain_image(labels)
    cropped = whole[30:, :, :]  # the first 30 columns go: the right side of the head (left with the flip)
    source = write_image(cropped, tmp_path / "cut.nrrd")
    assert main(["segment", str(source), str(tmp_path / "l.nii.gz"), "--model", str(random_model_file)]) == 0
    err = capsys.readouterr().err
    assert f"cut by the field of view on the {cut_side} side" in err
    assert err.count("cut by the field of view") == 1
    source = write_image(whole, tmp_path / "whole.nrrd")
    assert main(["segment", str(source), str(tmp_path / "whole_labels.nii.gz"), "--model", str(random_model_file)]) == 0
    assert "cut by the field of view" not in capsys.readouterr().err


def test_structure_flags_by_hand():
    names = load_label_table().names[1:]
    volumes = {name: 0.0 for name in names}
    # A head whose every structure sits at the middle of its range, then one that does not.
    ranges = qc.volume_ranges()
    for name in names:
        low, high = ranges[name]
        volumes[name] = (low + high) / 2 * 1000
    assert qc.structure_flags(volumes, {name: 0.95 for name in names}) == {}
    volumes["hippocampus"] *= 4
    flags = qc.structure_flags(volumes, {**{name: 0.95 for name in names}, "amygdala": 0.5})
    assert set(flags) == {"hippocampus", "amygdala"}
    assert "outside" in flags["hippocampus"] and "mean confidence 0.50" in flags["amygdala"]


def test_qc_column_and_printed_flags(tmp_path, random_model_file, labels_network, capsys):
    labels, _ = phantom_brain()
    source = write_image(brain_image(labels), tmp_path / "t1.nrrd")
    labels_network(labels)
    volumes = tmp_path / "v.csv"
    assert main(["segment", str(source), str(tmp_path / "l.nii.gz"), "--model", str(random_model_file),
                 "--volumes", str(volumes)]) == 0
    rows = {r["structure"]: r for r in csv.DictReader(open(volumes))}
    # The phantom has no putamen at all and more white matter (47 % of its "ICV") than any of the 20 heads
    # (at most 31 %, flagged above 46.7 %); its cortex (52 %) is within the range of heads (22-36 %, up to 54 %).
    assert "outside" in rows["putamen"]["qc"] and "outside" in rows["cerebral white matter"]["qc"]
    assert rows["cerebral cortex"]["qc"] == ""
    out = capsys.readouterr().out
    assert "putamen" in out and "QC: volume" in out


@needs_shared_data
def test_the_volume_ranges_table_holds_the_training_maps():
    table = load_label_table()
    ranges = qc.volume_ranges()
    for path in sorted((SHARED_DATA / LABEL_MAPS).glob("training_seg_*.nii.gz"))[:2]:
        merged = table.map_freesurfer(sitk.GetArrayFromImage(sitk.ReadImage(str(path))).astype(np.int64))
        counts = np.bincount(merged.ravel(), minlength=table.num_classes)[1:]
        for name, share in zip(table.names[1:], counts / counts.sum()):
            low, high = ranges[name]
            assert low * 1.5 - 1e-6 <= share <= high / 1.5 + 1e-6, name  # inside the observed range itself
