"""Did the OpenVINO engine lose anything? The torch engine against it, paired, on the same images.

    python bench/experiments/engine_nothing_lost.py [--draws 6] [--threads 2]

Both engines with ``segment``'s defaults (``--precision auto``: bf16 where the CPU has it natively, else fp32), the
shipped default model, on the images of ``speed_nothing_lost.py``: the real dev scans with FreeSurfer labels (mean
Dice of 17 against their aseg), the unlabelled real dev heads (agreement of the two labelmaps), ``--draws`` x 2
held-out synthetic whole brains (maps 19-20, seed 555; network grid) and ``--draws`` synthetic whole heads with
neck (map 19, end to end). Prints the paired difference (OpenVINO - torch) as mean ± s.e., wins, and the largest
per-structure change, and the largest probability difference seen on the network grid.
"""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import torch

from held_out import SHIPPED_MODEL, held_out_dice
from speed_nothing_lost import UNLABELLED, arguments, summary
from SegLossBrainLib.cpu_engine.runner import OpenVinoNetwork
from SegLossBrainLib.evaluation.metrics import dice_per_label
from SegLossBrainLib.imageio.volumes import read_image
from SegLossBrainLib.inference import segment as inference
from SegLossBrainLib.paths import REAL_DEV_SCANS

ENGINES = ("torch", "openvino")


def segment_with(engine: str, image: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(inference.segment(image, model=SHIPPED_MODEL, device="cpu", precision="auto",
                                                    engine=engine, force=True).labels)


def main() -> None:
    args, table, data = arguments(__doc__.splitlines()[0])
    torch_net, _ = inference.load_network(str(SHIPPED_MODEL), torch.device("cpu"))
    openvino_net = OpenVinoNetwork(SHIPPED_MODEL, "auto")

    real = {engine: [] for engine in ENGINES}
    for case, image_name, aseg_name in REAL_DEV_SCANS:
        image = read_image(str(data / image_name))
        reference = table.map_freesurfer(sitk.GetArrayFromImage(read_image(str(data / aseg_name))))
        for engine in ENGINES:
            real[engine].append(dice_per_label(segment_with(engine, image), reference, table.num_classes))
    for name in UNLABELLED:
        image = read_image(str(data / name))
        before, after = (segment_with(engine, image) for engine in ENGINES)
        brain = (before > 0) | (after > 0)
        print(f"{name}: labels agree on {100 * (before[brain] == after[brain]).mean():.3f} % of the voxels either "
              "engine calls brain or CSF")

    largest = [0.0]

    def both(image):
        x = image[None].contiguous()
        probabilities = {"torch": inference.predict_probabilities(torch_net, x, torch.device("cpu"), precision="auto")
                         .numpy(), "openvino": openvino_net.predict(x.numpy())}
        largest[0] = max(largest[0], float(np.abs(probabilities["torch"] - probabilities["openvino"]).max()))
        return {engine: value.argmax(0) for engine, value in probabilities.items()}

    synthetic = held_out_dice(both, args.draws, seed=555)
    heads = whole_heads(args.draws, table)
    print(f"\nprecision: OpenVINO {openvino_net.precision}, torch "
          f"{inference.autocast_dtype(torch.device('cpu'), 'auto') or 'fp32'}; largest probability difference "
          f"on the synthetic brains: {largest[0]:.4f}")
    print("\n| images | n | torch mean17 | OpenVINO mean17 | paired diff (points) | better/worse | largest "
          "structure change (points) |\n|---|---|---|---|---|---|---|")
    summary("real dev scans (bert, voxelmorph)", np.array(real["torch"]), np.array(real["openvino"]), table.names)
    summary("held-out synthetic whole brains", synthetic["torch"], synthetic["openvino"], table.names)
    summary("synthetic whole heads with neck (map 19)", heads["torch"], heads["openvino"], table.names)


def whole_heads(draws: int, table) -> dict:
    """Dice [image, class] of both engines on whole-head images of map 19, end to end (no augmentation)."""
    from SegLossBrainLib.paths import label_maps_dir
    from SegLossBrainLib.synthesis.generator import SynthesisSettings, SyntheticBrainGenerator

    settings = SynthesisSettings(patch_size=(176, 176, 176)).without_augmentation()
    generator = SyntheticBrainGenerator([str(label_maps_dir() / "training_seg_19.nii.gz")], settings)
    rng = torch.Generator().manual_seed(556)
    scores = {engine: [] for engine in ENGINES}
    for _ in range(draws):
        image, target = generator.sample(rng, source_index=0)
        volume = sitk.GetImageFromArray(image[0].numpy() * 1000)
        volume.SetSpacing([settings.spacing_mm] * 3)
        for engine in ENGINES:
            scores[engine].append(dice_per_label(segment_with(engine, volume), target.numpy(), table.num_classes))
    return {engine: np.array(values) for engine, values in scores.items()}


if __name__ == "__main__":
    main()
