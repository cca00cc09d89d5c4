"""Shared fixtures: small synthetic volumes with known geometry, a tiny random model file, ../shared data."""
from __future__ import annotations

import locale
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from SegLossBrainLib.paths import find_data_dir

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = find_data_dir()  # $SEGLOSSBRAIN_DATA, or ../shared/data beside this checkout; None when absent
needs_shared_data = pytest.mark.skipif(SHARED_DATA is None, reason="no data folder ($SEGLOSSBRAIN_DATA or ../shared/data)")


def rotation(ax: float, ay: float, az: float) -> np.ndarray:
    ax, ay, az = np.radians([ax, ay, az])
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def phantom(size=(70, 60, 50), spacing=(1.3, 1.1, 2.0), direction=None, origin=(-40.0, 30.0, -20.0),
            centre_mm=(5.0, -8.0, 12.0), radius_mm=18.0, dtype=sitk.sitkFloat32) -> tuple[sitk.Image, np.ndarray]:
    """A head-like ellipsoid of moderate intensity with a bright sphere of ``radius_mm`` at physical point
    ``centre_mm`` (LPS). Returns (image, boolean truth mask of the sphere on the image grid)."""
    image = sitk.Image([int(s) for s in size], dtype)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    if direction is not None:
        image.SetDirection([float(v) for v in np.asarray(direction).flatten()])
    k, j, i = np.meshgrid(*[np.arange(n) for n in reversed(size)], indexing="ij")
    index = np.stack([i, j, k], axis=-1).reshape(-1, 3).astype(float)
    matrix = np.asarray(image.GetDirection()).reshape(3, 3) @ np.diag(spacing)
    physical = index @ matrix.T + np.asarray(origin)
    centre = physical.mean(axis=0)
    head = (((physical - centre) / np.array([45.0, 45.0, 45.0])) ** 2).sum(axis=1) < 1
    sphere = np.linalg.norm(physical - np.asarray(centre_mm), axis=1) < radius_mm
    values = np.where(sphere, 1000.0, np.where(head, 300.0, 0.0)).reshape(tuple(reversed(size)))
    values += np.random.default_rng(0).normal(0, 5, values.shape)
    result = sitk.GetImageFromArray(values.astype(np.float32))
    result.CopyInformation(image)
    return sitk.Cast(result, dtype), sphere.reshape(tuple(reversed(size)))


TRUE_FRAME = rotation(3, 4, 9)  # columns: the head's left, posterior, superior axes in LPS
TRUE_CENTRE = np.array([4.0, -6.0, 10.0])
WM, CORTEX, HIPPOCAMPUS, THIRD_VENTRICLE, BRAINSTEM = 1, 2, 14, 11, 13


def fissure(y):
    """The phantom's midline surface: x = fissure(y) in head coordinates, bending 5 mm each way."""
    return 5.0 * np.sin(y / 25.0)


def phantom_brain(direction=None, spacing=(1.5, 1.7, 2.0), size=(104, 96, 76)):
    """(19-structure labelmap, head coordinates [k, j, i, 3]). Two hemispheres separated by a 2 mm gap along
    a curved fissure, joined by a white-matter bridge (a corpus callosum); hippocampi; midline structures."""
    direction = rotation(5, -7, 12) if direction is None else direction
    image = sitk.Image(list(size), sitk.sitkUInt8)
    image.SetSpacing(spacing)
    image.SetDirection([float(v) for v in np.asarray(direction).flatten()])
    centre_index = (np.array(size) - 1) / 2
    matrix = np.asarray(direction).reshape(3, 3) @ np.diag(spacing)
    image.SetOrigin([float(v) for v in TRUE_CENTRE - matrix @ centre_index])
    k, j, i = np.meshgrid(*[np.arange(n) for n in reversed(size)], indexing="ij")
    physical = np.stack([i, j, k], -1) @ matrix.T + np.asarray(image.GetOrigin())
    head = (physical - TRUE_CENTRE) @ TRUE_FRAME  # x left, y posterior, z superior
    x, y, z = head[..., 0], head[..., 1], head[..., 2]
    brain = (x / 62) ** 2 + (y / 72) ** 2 + (z / 52) ** 2 < 1
    labels = np.zeros(brain.shape, np.uint8)
    labels[brain] = CORTEX
    labels[brain & ((x / 48) ** 2 + (y / 58) ** 2 + (z / 40) ** 2 < 1)] = WM
    labels[brain & (np.abs(x - fissure(y)) < 1.0)] = 0  # the fissure
    labels[(np.abs(x - fissure(y)) < 8) & (np.abs(y) < 20) & (np.abs(z) < 5)] = WM  # the bridge
    for side in (1, -1):
        labels[np.linalg.norm(head - [side * 26, 8, -14], axis=-1) < 7] = HIPPOCAMPUS
    labels[(np.abs(x - fissure(y)) < 1.5) & (np.abs(y) < 10) & (np.abs(z - 12) < 6)] = THIRD_VENTRICLE
    labels[(x ** 2 + (y - 10) ** 2 < 100) & (z < -25) & (z > -45)] = BRAINSTEM
    result = sitk.GetImageFromArray(labels)
    result.CopyInformation(image)
    return result, head


def brain_image(labels: sitk.Image) -> sitk.Image:
    """A T1-like image of a phantom brain labelmap (white matter brightest), for the stand-in network below."""
    values = np.array([0, 110, 70, 20, 20, 110, 70, 90, 80, 85, 100, 20, 20, 95, 75, 75, 20, 80, 95, 90], np.float32)
    array = values[sitk.GetArrayFromImage(labels)] + np.random.default_rng(0).normal(0, 2, labels.GetSize()[::-1])
    image = sitk.GetImageFromArray(array.astype(np.float32))
    image.CopyInformation(labels)
    return image


@pytest.fixture
def labels_network(monkeypatch):
    """Makes ``segment`` answer with a known labelmap instead of running a network: ``install(labels)`` sets the
    labelmap (any grid); the "network's" probabilities are its one-hot on the network grid (nearest neighbour).
    The stand-in replaces PyTorch's forward pass, so the engine is held to torch; everything after the network
    is the same code for both engines (``inference.segment.finish``)."""
    from SegLossBrainLib.cpu_engine import runner
    from SegLossBrainLib.inference import cohort
    from SegLossBrainLib.inference import segment as engine

    grids = engine.grids
    planned = {}
    original = grids.network_input

    def network_input(image, grid):
        planned["grid"] = grid
        return original(image, grid)

    def install(labels: sitk.Image):
        def predict(network, tensor, device, tta=False, precision=None):
            reference = planned["grid"].reference_image()
            on_grid = sitk.Resample(labels, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
            array = torch.from_numpy(sitk.GetArrayFromImage(on_grid).astype(np.int64))
            return torch.nn.functional.one_hot(array, 20).permute(3, 0, 1, 2).float()

        monkeypatch.setattr(grids, "network_input", network_input)
        monkeypatch.setattr(engine, "predict_probabilities", predict)
        monkeypatch.setattr(engine, "choose_engine", lambda *args: "torch")
        monkeypatch.setattr(runner, "choose_engine", lambda *args: "torch")
        monkeypatch.setattr(cohort, "choose_engine", lambda *args: "torch")

    return install


class ThresholdNet(torch.nn.Module):
    """A stand-in network with a known answer: class 1 where the normalised intensity is above 0.6, else
    background. Lets geometry tests check where a structure lands without a trained model."""

    architecture = "threshold"

    def __init__(self, num_classes: int = 20):
        super().__init__()
        self.num_classes = num_classes
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.full((x.shape[0], self.num_classes, *x.shape[2:]), -20.0)
        logits[:, 0] = 0.0
        logits[:, 1] = 40.0 * (x[:, 0] - 0.6)
        return logits


@pytest.fixture
def threshold_net():
    return ThresholdNet()


@pytest.fixture(autouse=True)
def keep_the_locale():
    """Each test leaves the process locale as it found it: SimpleITK's DICOM series I/O switches it to "C" (ASCII
    text encoding), which would otherwise reach every later test that writes or decodes UTF-8 text."""
    saved = locale.setlocale(locale.LC_ALL)
    yield
    locale.setlocale(locale.LC_ALL, saved)


def phantom_series(folder: Path, labels_network, direction, spacing, size) -> tuple[Path, list[Path]]:
    """An oblique phantom brain written as a DICOM series in ``folder``, which the ``labels_network`` "segments"
    as the labelmap it was made from. Returns (folder, files)."""
    labels, _ = phantom_brain(direction=direction, spacing=spacing, size=size)
    labels_network(labels)
    return folder, write_dicom_series(brain_image(labels), folder)


@pytest.fixture(scope="session")
def random_model_file(tmp_path_factory) -> Path:
    """A randomly initialised Wong 2018 model saved as a model file (never presented as trained). It finds no
    brain in anything, so segmenting with it needs ``--force`` (as with ``ThresholdNet``)."""
    from SegLossBrainLib.models.files import save_model
    from SegLossBrainLib.networks import build_network

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("models") / "random.safetensors"
    save_model(build_network("wong2018"), path, {"loss": {"name": "none"}, "note": "random weights, tests only"})
    return path


def write_dicom_series(image: sitk.Image, folder: Path) -> list[Path]:
    """Write ``image`` as an MR DICOM series (one file per slice, int16) with pydicom: its geometry in the
    standard tags (position, orientation, spacing), so any reader rebuilds the same grid. Returns the files."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    array = np.round(sitk.GetArrayFromImage(image)).astype(np.int16)
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    spacing = image.GetSpacing()
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    files = []
    for k in range(array.shape[0]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality, ds.PatientID, ds.PatientName, ds.PatientSex = "MR", "PHANTOM", "Phantom^Brain", "O"
        ds.PatientBirthDate, ds.StudyDate, ds.StudyTime, ds.StudyID = "", "20240101", "120000", "1"
        ds.AccessionNumber, ds.ReferringPhysicianName, ds.Manufacturer = "", "", "test"
        ds.SeriesNumber, ds.InstanceNumber = 3, k + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
        ds.ImagePositionPatient = [f"{v:.6f}" for v in image.TransformIndexToPhysicalPoint((0, 0, k))]
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in list(direction[:, 0]) + list(direction[:, 1])]
        ds.PixelSpacing = [f"{spacing[1]:.6f}", f"{spacing[0]:.6f}"]  # row spacing (along j), column spacing (i)
        ds.SliceThickness = f"{spacing[2]:.6f}"
        ds.Rows, ds.Columns = array.shape[1], array.shape[2]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.PixelData = array[k].tobytes()
        path = folder / f"slice{k:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return files
