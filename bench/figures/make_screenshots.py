"""Make the README screenshots from a real run: docs/images/segmentation_slices.png and segmentation_3d.png.

Segments a real T1 scan with ``SegLossBrainLib.inference.segment`` (CPU by default), then draws

* ``segmentation_slices.png``: axial, coronal and sagittal slices through the brain centre, the grey image
  above and the same slice with the label overlay (colours from the label table) below, in radiological
  convention (patient left on image right), with the voxel aspect taken from the spacing;
* ``segmentation_3d.png``: smoothed surfaces of deep structures, extracted from the labelmap with VTK
  (discrete flying edges, windowed-sinc smoothing) in patient coordinates and rendered off-screen (VTK picks
  EGL/OSMesa by itself when there is no display).

The output is deterministic for a given model and image. Only PNGs are written into the repository.

    python bench/figures/make_screenshots.py --model M.safetensors \\
        --image ../shared/data/real_dev/bert_fs7.2_norm.nii.gz --out docs/images
"""
from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from PIL import Image  # noqa: E402 (installed with matplotlib)

from SegLossBrainLib.imageio.volumes import read_image, same_grid  # noqa: E402
from SegLossBrainLib.labels import load_label_table  # noqa: E402
from SegLossBrainLib.paths import REAL_DEV, data_dir  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
# surfaces in the 3D view, drawn in this order; the cerebellar cortex is see-through so the brainstem shows
SURFACES = ("lateral ventricle", "thalamus", "caudate", "putamen", "pallidum", "hippocampus", "amygdala",
            "brainstem", "cerebellum cortex")
SEE_THROUGH = {"cerebellum cortex": 0.35}
WIDTH_PX, DPI = 1200, 100


# -- segmentation -----------------------------------------------------------------------------------------
def run_segmentation(image: sitk.Image, model: Path, device: str, threads: int):
    import torch

    from SegLossBrainLib.inference.segment import segment

    torch.manual_seed(0)
    torch.set_num_threads(threads)
    start = time.perf_counter()
    result = segment(image, model=model, device=device)
    print(f"segmented on {result.device} in {time.perf_counter() - start:.0f} s "
          f"(network grid {'x'.join(map(str, result.network_grid.shape))})")
    return result.labels, result.model_metadata


def model_description(metadata: dict, model: Path) -> str:
    parts = [metadata.get("loss", {}).get("name") if isinstance(metadata.get("loss"), dict) else metadata.get("loss"),
             f"{metadata['steps']} steps" if metadata.get("steps") else None,
             f"sha256 {metadata['sha256'][:8]}" if metadata.get("sha256") else None]
    return f"model {model.name} (" + ", ".join(str(p) for p in parts if p) + ")"


# -- slices -------------------------------------------------------------------------------------------------
def to_lps_arrays(image: sitk.Image, labels: sitk.Image):
    """Both volumes re-ordered (no resampling) so that array[k, j, i] has i -> patient Left, j -> Posterior,
    k -> Superior, with their spacing (z, y, x). An oblique scan is shown along its closest axes."""
    image_lps, labels_lps = sitk.DICOMOrient(image, "LPS"), sitk.DICOMOrient(labels, "LPS")
    direction = np.array(image_lps.GetDirection()).reshape(3, 3)
    if not np.allclose(np.diag(direction), 1.0, atol=1e-3):  # the diagonal is > 0 by construction
        tilt = np.degrees(np.arccos(np.clip(np.diag(direction).min(), -1, 1)))
        print(f"note: the scan is oblique (up to {tilt:.0f} degrees); slices follow its own closest axes")
    return (sitk.GetArrayFromImage(image_lps).astype(np.float32), sitk.GetArrayFromImage(labels_lps),
            np.array(image_lps.GetSpacing()[::-1]))


def overlay(grey: np.ndarray, labels: np.ndarray, colors: np.ndarray, alpha: float) -> np.ndarray:
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    coloured = colors[labels][..., :3] / 255.0
    return np.clip(np.where((labels > 0)[..., None], (1 - alpha) * rgb + alpha * coloured, rgb), 0, 1)


def slices_figure(image: np.ndarray, labels: np.ndarray, spacing: np.ndarray, table, title: str, alpha: float):
    outside = {0, table.index_of("CSF"), table.index_of("optic chiasm")}
    structures = np.isin(labels, [s.index for s in table.structures if s.index not in outside])
    if not structures.any():
        raise SystemExit("the segmentation is empty: nothing to show")
    # centre: of the labelled brain; frame: the image's foreground (the head, or the brain when skull-stripped)
    centre = np.round(np.argwhere(structures).mean(axis=0)).astype(int)  # (k, j, i)
    foreground = image > np.percentile(image, 99.5) * 0.05
    box = np.argwhere(foreground if foreground.any() else structures)
    margin = np.ceil(6.0 / spacing).astype(int)
    low = np.maximum(box.min(axis=0) - margin, 0)
    high = np.minimum(box.max(axis=0) + margin + 1, labels.shape)
    image, labels = image[tuple(map(slice, low, high))], labels[tuple(map(slice, low, high))]
    centre = centre - low
    body = image[image > 0] if (image > 0).any() else image.ravel()
    lo, hi = np.percentile(body, (0.5, 99.5))
    grey = np.clip((image - lo) / max(hi - lo, 1e-6), 0, 1)
    dz, dy, dx = spacing
    k, j, i = centre
    # (panel name, grey slice, label slice, row spacing, column spacing, edge letters left/right/top/bottom)
    panels = [
        ("axial (seen from the feet)", grey[k], labels[k], dy, dx, ("R", "L", "A", "P")),
        ("coronal (seen from the front)", grey[:, j][::-1], labels[:, j][::-1], dz, dx, ("R", "L", "S", "I")),
        ("sagittal (seen from the left)", grey[:, :, i][::-1], labels[:, :, i][::-1], dz, dy, ("A", "P", "S", "I")),
    ]
    widths = [p[1].shape[1] * p[4] for p in panels]
    fig = plt.figure(figsize=(WIDTH_PX / DPI, 7.6), dpi=DPI)
    grid = fig.add_gridspec(2, 4, width_ratios=widths + [0.62 * max(widths)], left=0.01, right=0.995,
                            top=0.9, bottom=0.07, wspace=0.04, hspace=0.06)
    for column, (name, g, lab, row_mm, col_mm, letters) in enumerate(panels):
        extent = (0, g.shape[1] * col_mm, g.shape[0] * row_mm, 0)  # mm: the aspect follows the spacing
        for row, picture in enumerate((g, overlay(g, lab, table.colors, alpha))):
            ax = fig.add_subplot(grid[row, column])
            ax.imshow(picture, cmap="gray", vmin=0, vmax=1, extent=extent, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            style = dict(color="yellow", fontsize=10, fontweight="bold", transform=ax.transAxes)
            ax.text(0.015, 0.5, letters[0], ha="left", va="center", **style)
            ax.text(0.985, 0.5, letters[1], ha="right", va="center", **style)
            ax.text(0.5, 0.985, letters[2], ha="center", va="top", **style)
            ax.text(0.5, 0.015, letters[3], ha="center", va="bottom", **style)
            if row == 0:
                ax.set_title(name, fontsize=10)
    legend_ax = fig.add_subplot(grid[:, 3])
    legend_ax.axis("off")
    handles = [Patch(facecolor=np.array(s.color) / 255.0, edgecolor="0.3", label=f"{s.index} {s.name}")
               for s in table.structures[1:]]
    legend_ax.legend(handles=handles, loc="center left", fontsize=8.5, frameon=False, handlelength=1.4,
                     borderaxespad=0.0, labelspacing=0.55)
    fig.suptitle(title, fontsize=10.5, y=0.985)
    fig.text(0.5, 0.012, "Radiological convention: patient left on image right (axial, coronal), anterior on the "
             "left (sagittal). Slices through the centre of the labelled brain,\nshown with the voxel aspect of the "
             f"image spacing; label colours from the label table at opacity {alpha:.2f} (white matter is white).",
             ha="center", fontsize=8.5, linespacing=1.4)
    return fig


# -- 3D -----------------------------------------------------------------------------------------------------
def index_to_ras(image: sitk.Image) -> np.ndarray:
    """4x4 matrix from voxel index (i, j, k) to patient RAS millimetres (ITK's physical space is LPS)."""
    direction = np.array(image.GetDirection()).reshape(3, 3)
    matrix = np.eye(4)
    matrix[:3, :3] = direction @ np.diag(image.GetSpacing())
    matrix[:3, 3] = image.GetOrigin()
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ matrix


def structure_surface(array: np.ndarray, label: int, matrix: np.ndarray):
    """Closed, smoothed surface of one label in RAS millimetres (None when the label is absent)."""
    import vtk
    from vtkmodules.util import numpy_support

    where = np.argwhere(array == label)
    if where.size == 0:
        return None
    low, high = where.min(axis=0) - 2, where.max(axis=0) + 3  # one empty voxel around: closed surfaces
    low, high = np.maximum(low, 0), np.minimum(high, array.shape)
    mask = np.zeros(tuple(high - low + 2), np.uint8)
    mask[1:-1, 1:-1, 1:-1] = array[tuple(map(slice, low, high))] == label
    image = vtk.vtkImageData()  # voxel index space; the geometry is applied to the points afterwards
    image.SetDimensions(mask.shape[2], mask.shape[1], mask.shape[0])
    image.SetOrigin(low[2] - 1.0, low[1] - 1.0, low[0] - 1.0)
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(mask.ravel(), deep=True))
    surface = vtk.vtkDiscreteFlyingEdges3D()
    surface.SetInputData(image)
    surface.SetValue(0, 1)
    surface.ComputeNormalsOff()
    smooth = vtk.vtkWindowedSincPolyDataFilter()
    smooth.SetInputConnection(surface.GetOutputPort())
    smooth.SetNumberOfIterations(30)
    smooth.SetPassBand(0.01)
    smooth.BoundarySmoothingOff()
    smooth.FeatureEdgeSmoothingOff()
    smooth.NonManifoldSmoothingOn()
    smooth.NormalizeCoordinatesOn()
    transform = vtk.vtkTransform()
    transform.SetMatrix(matrix.ravel().tolist())
    placed = vtk.vtkTransformPolyDataFilter()
    placed.SetInputConnection(smooth.GetOutputPort())
    placed.SetTransform(transform)
    last = placed
    if np.linalg.det(matrix[:3, :3]) < 0:  # a mirroring geometry turns the surface inside out: turn it back
        last = vtk.vtkReverseSense()
        last.SetInputConnection(placed.GetOutputPort())
    normals = vtk.vtkPolyDataNormals()
    normals.SetInputConnection(last.GetOutputPort())
    normals.SplittingOff()
    normals.ConsistencyOn()
    normals.Update()
    return normals.GetOutput()


def render_view(surfaces, size, towards_camera, view_up) -> tuple[np.ndarray, np.ndarray]:
    """Off-screen render of (polydata, rgb, opacity), the camera in the RAS direction ``towards_camera`` from
    the structures' centre with ``view_up`` up. Returns the picture and the 3x3 world-to-view rotation (for
    the orientation arrows)."""
    import vtk

    renderer = vtk.vtkRenderer()
    renderer.SetBackground(1.0, 1.0, 1.0)
    renderer.SetUseDepthPeeling(True)
    renderer.SetMaximumNumberOfPeels(8)
    window = vtk.vtkRenderWindow()
    window.SetOffScreenRendering(True)
    window.SetMultiSamples(0)
    window.SetAlphaBitPlanes(True)
    window.SetSize(*size)
    window.AddRenderer(renderer)
    for polydata, rgb, opacity in surfaces:
        mapper = vtk.vtkPolyDataMapper()
        mapper.SetInputData(polydata)
        mapper.ScalarVisibilityOff()
        actor = vtk.vtkActor()
        actor.SetMapper(mapper)
        prop = actor.GetProperty()
        prop.SetColor(*rgb)
        prop.SetOpacity(opacity)
        prop.SetSpecular(0.2)
        prop.SetSpecularPower(20)
        renderer.AddActor(actor)
    bounds = np.array(renderer.ComputeVisiblePropBounds()).reshape(3, 2)
    centre = bounds.mean(axis=1)
    towards_camera = np.asarray(towards_camera, float) / np.linalg.norm(towards_camera)
    camera = renderer.GetActiveCamera()
    camera.SetFocalPoint(*centre)
    camera.SetPosition(*(centre + 500.0 * towards_camera))
    camera.SetViewUp(*view_up)
    camera.SetViewAngle(20.0)
    renderer.ResetCamera()
    camera.Zoom(1.3)
    renderer.ResetCameraClippingRange()
    window.Render()
    grab = vtk.vtkWindowToImageFilter()
    grab.SetInput(window)
    grab.SetInputBufferTypeToRGB()
    grab.ReadFrontBufferOff()
    grab.Update()
    from vtkmodules.util import numpy_support

    picture = numpy_support.vtk_to_numpy(grab.GetOutput().GetPointData().GetScalars())
    picture = picture.reshape(size[1], size[0], 3)[::-1].copy()  # VTK rows start at the bottom
    if picture.min() == picture.max():
        raise SystemExit("off-screen rendering gave an empty picture: this VTK build has no working EGL/OSMesa "
                         "(try the vtk-osmesa wheel)")
    view = camera.GetViewTransformMatrix()
    rotation = np.array([[view.GetElement(r, c) for c in range(3)] for r in range(3)])
    window.Finalize()
    return picture, rotation


def draw_axes_arrows(ax, rotation: np.ndarray) -> None:
    """Small arrows towards patient Left, Anterior and Superior, as the camera sees them."""
    origin = np.array([0.1, 0.13])
    for name, ras in (("L", (-1, 0, 0)), ("A", (0, 1, 0)), ("S", (0, 0, 1))):
        v = rotation @ np.array(ras, float)
        d = v[:2] * 0.065
        if np.hypot(*d) < 0.012:  # along the line of sight: a dot instead of an arrow
            toward = "toward the viewer" if v[2] > 0 else "away"
            ax.text(origin[0] - 0.04, origin[1] - 0.07, f"{name} {toward}", transform=ax.transAxes, fontsize=8,
                    color="0.2", ha="left", va="center")
            continue
        ax.annotate("", xy=origin + d, xytext=origin, xycoords="axes fraction",
                    arrowprops=dict(arrowstyle="->", color="0.2", lw=1.2))
        ax.text(*(origin + d * 1.35), name, transform=ax.transAxes, fontsize=9, color="0.1",
                ha="center", va="center")


def surfaces_figure(labels_image: sitk.Image, table, title: str):
    array = sitk.GetArrayFromImage(labels_image)  # (k, j, i)
    matrix = index_to_ras(labels_image)
    surfaces, present = [], []
    for name in SURFACES:
        index = table.index_of(name)
        polydata = structure_surface(array, index, matrix)
        if polydata is None or polydata.GetNumberOfPoints() == 0:
            print(f"  {name}: not segmented, left out of the 3D view")
            continue
        rgb = tuple(c / 255.0 for c in table.structures[index].color)
        surfaces.append((polydata, rgb, SEE_THROUGH.get(name, 1.0)))
        present.append(table.structures[index])
    if not surfaces:
        raise SystemExit("none of the 3D structures was segmented: nothing to show")
    # (title, RAS direction towards the camera, view up)
    views = [("from the front-left, above", (-0.65, 0.65, 0.4), (0, 0, 1)), ("from the left", (-1, 0, 0), (0, 0, 1)),
             ("from above", (0, 0, 1), (0, 1, 0))]
    size = (2 * 340, 2 * 400)  # twice the shown size: the downscaling smooths the edges
    fig = plt.figure(figsize=(WIDTH_PX / DPI, 5.0), dpi=DPI)
    grid = fig.add_gridspec(1, 4, width_ratios=[1, 1, 1, 0.5], left=0.005, right=0.995, top=0.9,
                            bottom=0.07, wspace=0.02)
    for column, (name, towards_camera, view_up) in enumerate(views):
        picture, rotation = render_view(surfaces, size, towards_camera, view_up)
        ax = fig.add_subplot(grid[0, column])
        ax.imshow(picture, interpolation="antialiased")
        ax.axis("off")
        ax.set_title(f"seen {name}", fontsize=10)
        draw_axes_arrows(ax, rotation)
    legend_ax = fig.add_subplot(grid[0, 3])
    legend_ax.axis("off")
    handles = [Patch(facecolor=np.array(s.color) / 255.0, edgecolor="0.3",
                     alpha=SEE_THROUGH.get(s.name, 1.0) ** 0.5, label=s.name
                     + ("\n(see-through)" if s.name in SEE_THROUGH else "")) for s in present]
    legend_ax.legend(handles=handles, loc="center left", fontsize=9, frameon=False, borderaxespad=0.0)
    fig.suptitle(title, fontsize=10.5, y=0.985)
    fig.text(0.5, 0.015, "Surfaces from the labelmap (discrete flying edges, windowed-sinc smoothing) in patient "
             "coordinates, both hemispheres; arrows point to the patient's left (L), anterior (A) and superior (S).",
             ha="center", fontsize=8.5)
    return fig


def save_png(fig, path: Path, limit_kb: int = 400) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=DPI, format="png")
    plt.close(fig)
    picture = Image.open(buffer).convert("RGB")
    picture.save(path, optimize=True)
    # too big: a palette (no dithering: deterministic, clean edges); octree keeps the small legend swatches'
    # colours, which median cut merges into their neighbours
    for colours in (256, 128):
        if path.stat().st_size <= limit_kb * 1024:
            break
        picture.quantize(colors=colours, method=Image.Quantize.FASTOCTREE,
                         dither=Image.Dither.NONE).save(path, optimize=True)
    print(f"wrote {path} ({picture.size[0]}x{picture.size[1]} px, {path.stat().st_size // 1024} KB)")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="model file (.safetensors with its .json)")
    parser.add_argument("--image", type=Path, help="T1 scan (default: bert of the data folder's real_dev)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images", help="folder for the PNGs")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--alpha", type=float, default=0.45, help="overlay opacity")
    parser.add_argument("--labels", type=Path, help="reuse a labelmap written by --save-labels (no network run)")
    parser.add_argument("--save-labels", type=Path, help="also write the labelmap here (outside the repository)")
    args = parser.parse_args(argv)

    table = load_label_table()
    args.image = args.image or data_dir("--image") / REAL_DEV / "bert_fs7.2_norm.nii.gz"
    image = read_image(args.image)
    from SegLossBrainLib.models.files import read_metadata

    metadata = read_metadata(args.model)
    if args.labels:
        labels = sitk.ReadImage(str(args.labels))
        if not same_grid(labels, image):
            raise SystemExit(f"{args.labels} is not on the grid of {args.image}: segment that image again")
    else:
        labels, metadata = run_segmentation(image, args.model, args.device, args.threads)
        if args.save_labels:
            sitk.WriteImage(labels, str(args.save_labels), True)
    scan = args.image.name.removesuffix(".gz").removesuffix(".nii").removesuffix(".mgz")
    title = f"SegLossBrain on the real scan {scan}, {model_description(metadata, args.model)}"
    args.out.mkdir(parents=True, exist_ok=True)
    grey, label_array, spacing = to_lps_arrays(image, labels)
    save_png(slices_figure(grey, label_array, spacing, table, title, args.alpha),
             args.out / "segmentation_slices.png")
    save_png(surfaces_figure(labels, table, title), args.out / "segmentation_3d.png")


if __name__ == "__main__":
    main()
