"""Volume nodes <-> files and numpy arrays, through MRML's own storage node (no ``slicer.util``, no scene).

Files are how the Slicer process and the engine's child process exchange images. Arrays use numpy's
(k, j, i) order, like ``slicer.util.arrayFromVolume``.
"""
from __future__ import annotations

import numpy as np

from .i18n import _


class GridMismatch(ValueError):
    """A file the engine wrote is not on the grid of the volume it was computed from."""


def array_from_image(image) -> np.ndarray:
    """(k, j, i) view of a single-component vtkImageData (copy-free)."""
    from vtkmodules.util import numpy_support

    dims = image.GetDimensions()
    scalars = image.GetPointData().GetScalars()
    if scalars is None:
        raise ValueError(_("The image holds no voxel data."))
    array = numpy_support.vtk_to_numpy(scalars)
    components = image.GetNumberOfScalarComponents()
    shape = (dims[2], dims[1], dims[0]) + ((components,) if components > 1 else ())
    return array.reshape(shape)


def image_from_array(array: np.ndarray):
    """vtkImageData (origin 0, spacing 1: geometry lives in the node's IJK-to-RAS) holding a copy of array."""
    import vtk
    from vtkmodules.util import numpy_support

    array = np.ascontiguousarray(array)
    if array.dtype not in (np.uint8, np.int16, np.int32, np.float32):
        raise TypeError(f"arrays must be uint8, int16, int32 or float32, not {array.dtype}")
    image = vtk.vtkImageData()
    image.SetDimensions(array.shape[2], array.shape[1], array.shape[0])
    scalars = numpy_support.numpy_to_vtk(array.ravel(), deep=True)
    image.GetPointData().SetScalars(scalars)
    return image


def ijk_to_ras(volume_node) -> np.ndarray:
    import vtk

    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def set_ijk_to_ras(volume_node, matrix: np.ndarray) -> None:
    import vtk

    vtk_matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            vtk_matrix.SetElement(r, c, float(matrix[r][c]))
    volume_node.SetIJKToRASMatrix(vtk_matrix)


def ijk_to_ras_from_itk(origin, spacing, direction) -> np.ndarray:
    """IJK-to-RAS of an ITK/SimpleITK image (origin, spacing and direction in LPS, as files store them)."""
    matrix = np.eye(4)
    matrix[:3, :3] = np.asarray(direction, float).reshape(3, 3) * np.asarray(spacing, float)
    matrix[:3, 3] = origin
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ matrix


def add_volume_node(scene, name: str, array: np.ndarray, matrix: np.ndarray, label: bool = False):
    """A volume node in ``scene`` holding a copy of ``array`` (k, j, i) with IJK-to-RAS ``matrix``, displayed."""
    node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode" if label else "vtkMRMLScalarVolumeNode", name)
    node.SetAndObserveImageData(image_from_array(array))
    set_ijk_to_ras(node, matrix)
    node.CreateDefaultDisplayNodes()
    return node


def isotropic_grid_node(volume_node, spacing: float):
    """A bare volume node on the grid the engine writes its labels on with ``--output-spacing spacing``: the
    engine's own ``isotropic_geometry`` for this volume (never added to a scene, no voxels allocated). Built from
    the node's IJK-to-RAS, whose frame does not matter to that geometry."""
    import slicer
    import vtk

    from SegLossBrainLib.preprocessing.output_grid import isotropic_geometry  # numpy only

    matrix = ijk_to_ras(volume_node)
    voxel_spacing = np.linalg.norm(matrix[:3, :3], axis=0)
    direction = matrix[:3, :3] / voxel_spacing
    origin, size = isotropic_geometry(matrix[:3, 3], voxel_spacing, direction,
                                      volume_node.GetImageData().GetDimensions(), spacing)
    grid = np.eye(4)
    grid[:3, :3], grid[:3, 3] = direction * spacing, origin
    image = vtk.vtkImageData()
    image.SetDimensions(*size)
    node = slicer.vtkMRMLScalarVolumeNode()
    node.SetAndObserveImageData(image)
    set_ijk_to_ras(node, grid)
    return node


def voxel_volume_mm3(volume_node) -> float:
    """Volume of one voxel; the determinant also covers oblique grids, where spacing alone is not enough."""
    return float(abs(np.linalg.det(ijk_to_ras(volume_node)[:3, :3])))


def write_volume(volume_node, path) -> None:
    """Write the node's voxels and its own (untransformed) IJK-to-RAS geometry to path (.nrrd/.nii.gz/.mha)."""
    import slicer

    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    storage.UseCompressionOff()  # a temporary file: speed matters, size does not
    if not storage.WriteData(volume_node):
        raise OSError(_("Could not write the input volume to {path}.").format(path=path))


def read_on_grid(path, reference_volume, label: bool) -> np.ndarray:
    """Read a file the engine computed for ``reference_volume`` and return its (k, j, i) array on that grid.

    The engine promises its outputs lie on exactly the input grid. MRML's reader may hand the same grid back
    with axes flipped or swapped (it does so for left-handed IJK-to-RAS matrices), so the voxels are re-ordered
    to the input's index order; anything that is not the same set of voxel centres is reported, not guessed.
    """
    import slicer

    node = slicer.vtkMRMLLabelMapVolumeNode() if label else slicer.vtkMRMLScalarVolumeNode()
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    if not storage.ReadData(node) or node.GetImageData() is None:
        raise OSError(_("Could not read the engine's output file {path}.").format(path=path))
    array = np.array(array_from_image(node.GetImageData()))
    dims = tuple(reference_volume.GetImageData().GetDimensions())
    aligned = align_to_grid(array, ijk_to_ras(node), ijk_to_ras(reference_volume), dims)
    if aligned is None:
        raise GridMismatch(
            _("The engine's output {path} ({found} voxels) does not lie on the input volume's grid ({expected} "
              "voxels).").format(path=path, found="x".join(map(str, array.shape[::-1])),
                                 expected="x".join(map(str, dims))))
    return aligned


def align_to_grid(array: np.ndarray, matrix: np.ndarray, reference: np.ndarray, dims, tolerance=1e-3):
    """Re-index ``array`` (k, j, i; IJK-to-RAS ``matrix``) onto the reference grid (``reference``, ``dims`` as
    i, j, k), when both describe the same voxel centres up to axis flips and swaps. None otherwise.

    ``tolerance`` is in voxels: file formats store geometry in single precision.
    """
    if array.ndim != 3:
        return None
    to_reference = np.linalg.inv(reference) @ matrix  # file voxel index -> reference voxel index
    rotation, offset = to_reference[:3, :3], to_reference[:3, 3]
    signed = np.round(rotation)
    if np.abs(rotation - signed).max() > tolerance or np.abs(offset - np.round(offset)).max() > tolerance:
        return None
    if not (np.abs(signed).sum(axis=0) == 1).all() or not (np.abs(signed).sum(axis=1) == 1).all():
        return None
    file_ijk = array.transpose(2, 1, 0)
    source_axis = [int(np.nonzero(signed[a])[0][0]) for a in range(3)]  # reference axis a <- file axis
    result = file_ijk.transpose(source_axis)
    if result.shape != tuple(dims):
        return None
    for axis in range(3):
        sign = signed[axis, source_axis[axis]]
        expected_offset = 0 if sign > 0 else dims[axis] - 1
        if round(offset[axis]) != expected_offset:
            return None
        if sign < 0:
            result = np.flip(result, axis)
    return np.ascontiguousarray(result.transpose(2, 1, 0))
