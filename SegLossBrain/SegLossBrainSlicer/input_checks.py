"""Bad input, found before any work starts, each reported in a sentence the user can act on.

Transforms: the volume is segmented on its own voxel grid and the segmentation is placed under the same
parent transform, so it moves with the volume. Nothing is hardened and the input node is never modified;
the user is told (a note, not an error) because the network sees the volume as scanned, without the transform.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from .i18n import _

# Below this many voxels along an axis a "volume" is a slice or a localiser; the network needs 3D context.
MIN_VOXELS_PER_AXIS = 8


class InputProblem(ValueError):
    """The message is meant for the user as is."""


def check_input_volume(volume) -> list[str]:
    """Raise InputProblem when ``volume`` cannot be segmented; return notes (not errors) otherwise."""
    if volume is None:
        raise InputProblem(_("Select an input volume (a brain MRI) first."))
    if volume.IsA("vtkMRMLLabelMapVolumeNode"):
        raise InputProblem(_("'{name}' is a label map, not an MRI. Select the scanned image instead.").format(
            name=volume.GetName()))
    if volume.IsA("vtkMRMLVectorVolumeNode") or volume.IsA("vtkMRMLTensorVolumeNode"):
        raise InputProblem(_("'{name}' is a vector or tensor image (colour, diffusion, ...). Select a single "
                             "3D scalar MRI.").format(name=volume.GetName()))
    if not volume.IsA("vtkMRMLScalarVolumeNode"):
        raise InputProblem(_("'{name}' is not a scalar volume.").format(name=volume.GetName()))
    image = volume.GetImageData()
    if image is None or image.GetPointData().GetScalars() is None:
        raise InputProblem(_("'{name}' holds no voxels (still loading, or an empty node).").format(
            name=volume.GetName()))
    if image.GetNumberOfScalarComponents() != 1:
        raise InputProblem(_("'{name}' has {n} values per voxel (a 4D, multi-echo or colour image). Extract one "
                             "3D frame first, e.g. with the Sequences module.").format(
            name=volume.GetName(), n=image.GetNumberOfScalarComponents()))
    dims = image.GetDimensions()
    if min(dims) < MIN_VOXELS_PER_AXIS:
        raise InputProblem(_("'{name}' is {dims} voxels: too thin for a 3D brain segmentation.").format(
            name=volume.GetName(), dims="x".join(map(str, dims))))
    notes = []
    note = transform_note(volume)
    if note:
        notes.append(note)
    if _is_sequence_frame(volume):
        notes.append(_("'{name}' is one frame of a sequence: only the frame shown now is segmented.").format(
            name=volume.GetName()))
    return notes


def check_output_spacing(volume, spacing) -> float | None:
    """The output spacing to ask the engine for: None for 0 (the input's own grid), else ``spacing`` in mm when
    the engine accepts it for this volume (the engine's own rule), InputProblem saying why not otherwise."""
    from SegLossBrainLib.preprocessing.output_grid import output_spacing_problem  # numpy only

    if spacing is None or spacing == 0:
        return None
    problem = output_spacing_problem(spacing, volume.GetImageData().GetDimensions(), volume.GetSpacing())
    if problem:
        raise InputProblem(_("Output spacing: {problem}. 0 (input grid) keeps the input's own voxels.").format(
            problem=problem))
    return float(spacing)


def transform_note(volume) -> str | None:
    transform = volume.GetParentTransformNode()
    if transform is None:
        return None
    return _("'{name}' is under the transform '{transform}'. It is segmented as scanned and the segmentation is "
             "placed under the same transform, so both move together; nothing is hardened.").format(
        name=volume.GetName(), transform=transform.GetName())


def _is_sequence_frame(volume) -> bool:
    scene = volume.GetScene()
    if scene is None:
        return False
    browsers = scene.GetNodesByClass("vtkMRMLSequenceBrowserNode")
    browsers.UnRegister(scene)  # the C++ call hands over a reference the Python wrapper also counts
    return any(
        browsers.GetItemAsObject(n).IsProxyNodeID(volume.GetID()) for n in range(browsers.GetNumberOfItems())
    )


def check_still_in_scene(scene, node, what: str) -> None:
    """Raise when ``node`` left ``scene`` (deleted, or the scene was closed) while the engine was running."""
    if scene is None or node is None or node.GetScene() is not scene or scene.GetNodeByID(node.GetID()) is None:
        raise InputProblem(_("The {what} was removed, or the scene closed, while segmenting. The result was "
                             "discarded; nothing was added to the scene.").format(what=what))


def check_model_file(path, expected_sha256: str | None = None) -> None:
    """A missing model file, or one whose checksum differs from its metadata, is refused before running."""
    if not path:
        raise InputProblem(_("No model is selected. Install a model or train one (see the module's help)."))
    path = Path(path)
    if not path.is_file():
        raise InputProblem(_("The model file {path} is missing. Reinstall the extension, or pick another model.")
                           .format(path=path))
    if expected_sha256:
        digest = hashlib.sha256()
        with open(path, "rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest().lower() != expected_sha256.strip().lower():
            raise InputProblem(_("The model file {path} does not match its recorded checksum: it was modified or "
                                 "damaged. Reinstall the extension, or pick another model.").format(path=path))
