"""``segment(image, ...)``: a volume in, a labelmap on exactly its grid out.

The network runs on OpenVINO (``cpu_engine/``) or PyTorch (``engine``); everything around it is numpy and
SimpleITK, so a scan segmented on OpenVINO never imports torch (about a second of every command)."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import SimpleITK as sitk

from ..cpu_engine.runner import choose_engine
from ..evaluation.volumes import structure_volumes_ml
from ..imageio.volumes import check_image, check_output_spacing
from ..models.store import resolve_model
from ..postprocessing import qc
from ..postprocessing.hemispheres import Plane, check_hemisphere_table, side_volumes_ml, split_hemispheres
from ..postprocessing.islands import suppress_islands
from ..postprocessing.pial_boundary import refine_pial_boundary
from ..preprocessing import grid as grids

ProgressCallback = Callable[[float, str], None]


@dataclass
class SegmentationResult:
    labels: sitk.Image  # uint8, values 0..19 in the label table's order, on the input grid (or the one asked for)
    confidence: sitk.Image | None = None  # float32 per-voxel max probability, on the grid of ``labels``
    probabilities: torch.Tensor | None = None  # [20, D, H, W] on the network grid (return_probabilities), CPU
    network_grid: grids.NetworkGrid | None = None
    volumes_ml: dict = field(default_factory=dict)
    model_metadata: dict = field(default_factory=dict)
    device: str = "cpu"
    quality: qc.QualityReport | None = None  # no-brain / field-of-view warnings, per-structure flags
    sided_labels: sitk.Image | None = None  # with hemispheres: FreeSurfer aseg values, left/right split
    midsagittal_plane: Plane | None = None
    side_volumes_ml: dict = field(default_factory=dict)  # with hemispheres: name -> (left mL, right mL)
    precision: str = "fp32"  # what the network ran in: fp32, or bf16/fp16 autocast
    engine: str = "torch"  # what ran the network: torch or openvino


def predict_probabilities(network: torch.nn.Module, tensor: torch.Tensor, device: torch.device,
                          tta: bool = False, precision: str | None = None) -> torch.Tensor:
    """Softmax probabilities [C, D, H, W] for a normalised [1, 1, D, H, W] tensor. ``precision`` (auto, fp32,
    bf16; ``device.resolve_precision``) picks the autocast; None, what training's validation uses, is bf16 (or
    fp16) autocast on CUDA and fp32 elsewhere, so that scores on a CPU repeat exactly. With ``tta``, the left-right mirrored image is segmented too and the two
    averaged: every structure is merged left+right, so the labels need no swapping after mirroring back."""
    import torch

    tensor = tensor.to(device)
    if next(network.parameters()).is_contiguous(memory_format=torch.channels_last_3d):
        tensor = tensor.contiguous(memory_format=torch.channels_last_3d)
    views = [tensor, torch.flip(tensor, dims=[-1])] if tta else [tensor]
    total = None
    for index, view in enumerate(views):
        with torch.inference_mode():
            dtype = autocast_dtype(device, precision)
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                logits = network(view)
            probabilities = torch.softmax(logits.float(), dim=1)[0]
        if index == 1:
            probabilities = torch.flip(probabilities, dims=[-1])
        total = probabilities if total is None else total + probabilities
    return (total / len(views)).cpu()


def autocast_dtype(device: torch.device, precision: str | None) -> torch.dtype | None:
    """The autocast dtype of inference (None: plain fp32). CUDA keeps fp16 where it lacks bf16."""
    import torch

    from ..device import resolve_precision

    if device.type == "cuda" and precision in (None, "auto"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type in ("cuda", "cpu") and precision is not None and resolve_precision(precision, device) == "bf16":
        return torch.bfloat16
    return None


def load_network(model: str | os.PathLike | torch.nn.Module | None, device: torch.device):
    """(network in eval mode on ``device``, its model-file metadata); ``model`` as ``segment`` takes it."""
    import torch

    from ..models.files import load_model
    from ..networks.inference_graph import fused_for_inference

    if isinstance(model, torch.nn.Module):
        return model.to(device).eval(), {}
    network, metadata = load_model(resolve_model(model), device=str(device))
    network = fused_for_inference(network)  # BatchNorm folded into the convolutions: one pass less per layer
    if device.type == "cpu":
        # oneDNN's 3D convolutions run about 25 % faster on channels-last tensors (see BENCHMARKS.md).
        # Only for a network loaded here: one passed in (e.g. mid-training) is not ours to convert.
        network = network.to(memory_format=torch.channels_last_3d)
    return network, metadata


@dataclass
class PreparedImage:
    """A checked image resampled onto its network grid: all the CPU work before the network, which a cohort
    does for the next case while the network runs on the current one."""
    image: sitk.Image
    grid: grids.NetworkGrid
    array: np.ndarray  # normalised network input [1, 1, D, H, W], float32

    @property
    def tensor(self) -> torch.Tensor:
        """The network input as a torch tensor (no copy)."""
        import torch

        return torch.from_numpy(self.array)


def prepare_image(image: sitk.Image, checked: bool = False) -> PreparedImage:
    """Check ``image`` (unless already ``checked``), plan its network grid and resample it there."""
    if not checked:
        check_image(image)
    network_grid = grids.plan_network_grid(image)
    return PreparedImage(image, network_grid, grids.network_input(image, network_grid))


def _network_message(device: str, engine: str, used: str, grid: grids.NetworkGrid, tta: bool) -> str:
    return (f"running the network on {device} with {'OpenVINO' if engine == 'openvino' else 'PyTorch'} in {used} "
            f"({'x'.join(map(str, grid.shape))} voxels{', with left-right flip' if tta else ''})")


def segment_prepared(prepared: PreparedImage, network: torch.nn.Module, device: torch.device, metadata: dict,
                     tta: bool = False, return_probabilities: bool = False, with_confidence: bool = False,
                     progress: ProgressCallback | None = None, island_fraction: float = 0.0,
                     output_spacing: float | None = None, hemispheres: bool = False,
                     force: bool = False, precision: str | None = None,
                     pial_refinement: bool = True) -> SegmentationResult:
    """The network (PyTorch) and the way back to the input grid (options as ``segment``), for an image that
    ``prepare_image`` made ready."""
    import torch

    report = progress or (lambda fraction, message: None)
    dtype = autocast_dtype(device, precision)
    used = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]
    report(0.25, _network_message(device.type, "torch", used, prepared.grid, tta))
    probabilities = predict_probabilities(network, prepared.tensor, device, tta=tta, precision=precision)
    return finish(prepared, probabilities, metadata, device.type, used, "torch", return_probabilities,
                  with_confidence, report, island_fraction, output_spacing, hemispheres, force, pial_refinement)


def finish(prepared: PreparedImage, probabilities, metadata: dict, device: str, used: str, engine: str,
           return_probabilities: bool, with_confidence: bool, report: ProgressCallback, island_fraction: float,
           output_spacing: float | None, hemispheres: bool, force: bool,
           pial_refinement: bool = True) -> SegmentationResult:
    """Everything after the network, whichever engine ran it: ``probabilities`` [C, D, H, W] on the network grid
    (a numpy array or a CPU torch tensor) -> islands, QC, labels on the input grid, volumes, sides."""
    image, network_grid = prepared.image, prepared.grid
    probabilities = suppress_islands(probabilities, island_fraction)
    quality = qc.check_input(probabilities, network_grid.spacing, force)
    report(0.8, "mapping probabilities back to the input grid")
    reference = image if output_spacing is None else grids.isotropic_grid(image, output_spacing)
    labels, confidence = grids.probabilities_to_image(probabilities, network_grid, reference, with_confidence)
    if pial_refinement:
        report(0.85, "deciding the cortex's outer boundary at the input's resolution")
        intensities = image if reference is image else sitk.Resample(image, reference, sitk.Transform(),
                                                                     sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        labels, confidence = refine_pial_boundary(labels, intensities, probabilities, network_grid, confidence)
    volumes_ml = structure_volumes_ml(labels)
    qc.check_output(quality, labels, volumes_ml)
    sided, plane, sides_ml = None, None, {}
    if hemispheres:
        report(0.9, "splitting left and right")
        sided, plane = split_hemispheres(labels)
        sides_ml = side_volumes_ml(sided)
    if return_probabilities and isinstance(probabilities, np.ndarray):
        import torch  # the documented type of the field, whichever engine ran

        probabilities = torch.from_numpy(probabilities)
    report(1.0, "done")
    return SegmentationResult(
        labels=labels,
        confidence=confidence,
        probabilities=probabilities if return_probabilities else None,
        network_grid=network_grid,
        volumes_ml=volumes_ml,
        model_metadata=metadata,
        device=device,
        quality=quality,
        sided_labels=sided,
        midsagittal_plane=plane,
        side_volumes_ml=sides_ml,
        precision=used,
        engine=engine,
    )


def segment(image: sitk.Image, model: str | os.PathLike | torch.nn.Module | None = None, device: str = "auto",
            tta: bool = False, return_probabilities: bool = False, with_confidence: bool = False,
            progress: ProgressCallback | None = None, island_fraction: float = 0.0,
            output_spacing: float | None = None, hemispheres: bool = False, force: bool = False,
            precision: str | None = None, engine: str = "auto",
            pial_refinement: bool = True) -> SegmentationResult:
    """Segment the 19 structures of a brain MR volume.

    ``model``: None (the installed default), a path or name of a model file, or a loaded network.
    ``island_fraction``: when > 0, a structure's detached pieces smaller than this share of its largest piece
    go to their next most probable class (``postprocessing/islands.py``; off by default).
    ``output_spacing``: labels and confidence on an isotropic grid of this spacing (mm) covering the input,
    mapped from the same probabilities; by default exactly ``image``'s size, spacing, origin and direction.
    ``pial_refinement``: decide the boundary between cortex and the outside (background, CSF) at the input's
    resolution from its intensities (``postprocessing/pial_boundary.py``; on by default; a voxel that changes label
    gets its new label's probability in the confidence map).
    ``hemispheres``: also split the paired structures into left and right (``sided_labels``).
    ``force``: segment even when no brain is found (``qc.NoBrainError`` otherwise, before any output exists).
    ``precision``: auto (bf16 where native: CUDA, CPUs with AVX512-BF16/AMX), fp32 or bf16; None as
    ``predict_probabilities`` (the commands pass auto).
    ``engine``: auto (OpenVINO on a CPU when installed, else PyTorch: ``cpu_engine.runner.choose_engine``),
    openvino or torch.
    For many images, ``inference.cohort.segment_many`` loads the model once and overlaps reading with the network."""
    report = progress or (lambda fraction, message: None)
    check_image(image)  # bad input is refused before the model is loaded
    if output_spacing is not None:
        check_output_spacing(image, output_spacing)
    if hemispheres:
        check_hemisphere_table()
    options = dict(return_probabilities=return_probabilities, with_confidence=with_confidence,
                   island_fraction=island_fraction, output_spacing=output_spacing, hemispheres=hemispheres,
                   force=force, pial_refinement=pial_refinement)
    if choose_engine(engine, device, model) == "torch":
        from ..device import select_device

        chosen = select_device(device)
        report(0.05, "loading model")
        network, metadata = load_network(model, chosen)
        report(0.15, "resampling to the network grid")
        return segment_prepared(prepare_image(image, checked=True), network, chosen, metadata, tta=tta,
                                progress=progress, precision=precision, **options)
    from ..cpu_engine.runner import OpenVinoNetwork

    report(0.05, "loading model")
    network = OpenVinoNetwork(resolve_model(model), precision)
    report(0.15, "resampling to the network grid")
    network_grid = grids.plan_network_grid(image)
    with ThreadPoolExecutor(1) as pool:  # OpenVINO compiles for the grid while the image is resampled onto it
        compiling = pool.submit(network.compile_for, network_grid.shape)
        prepared = PreparedImage(image, network_grid, grids.network_input(image, network_grid))
        compiling.result()
    report(0.25, _network_message("cpu", "openvino", network.precision, prepared.grid, tta))
    probabilities = network.predict(prepared.array, tta=tta)
    return finish(prepared, probabilities, network.metadata, "cpu", network.precision, "openvino", report=report,
                  **options)
