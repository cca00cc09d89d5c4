"""Training on synthetic brains mixed with real labelled scans: which source each batch comes from, the
refusals, and what the model file records about the real scans it was trained on."""
import hashlib
import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from SegLossBrainLib.cli import main
from SegLossBrainLib.models.files import read_metadata
from SegLossBrainLib.training.mixed_sampler import MixedSampler
from SegLossBrainLib.training.trainer import Trainer, TrainingConfig


class Tagged:
    """A stand-in source whose batches are filled with one value, so a batch tells where it came from."""

    def __init__(self, value, sources=()):
        self.value, self.sources = value, list(sources)

    def batch(self, batch_size, rng):
        torch.rand(1, generator=rng)  # a real source draws from the generator too
        return torch.full((batch_size, 1, 4, 4, 4), float(self.value)), torch.zeros(batch_size, 4, 4, 4).long()


def assert_picks_follow_the_draws(sampler, share: float, seed: int, batches: int = 400) -> None:
    """Every batch of ``sampler`` (Tagged 0 / Tagged 1) comes from the source that a replay of its generator's
    draw picks, and the second source's share is ``share`` (binomial(400, p): s.d. <= 0.025)."""
    rng, replay = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
    picked = []
    for _ in range(batches):
        picked.append(int(sampler.batch(1, rng)[0].flatten()[0]))
        expected = 1 if float(torch.rand(1, generator=replay)) < share else 0
        torch.rand(1, generator=replay)  # the source's own draw
        assert picked[-1] == expected
    assert abs(np.mean(picked) - share) < 0.08


def test_each_batch_comes_from_the_source_the_generator_draw_picks():
    sampler = MixedSampler(Tagged(0, sources=["maps"]), Tagged(1), labelled_fraction=0.3)
    assert_picks_follow_the_draws(sampler, 0.3, seed=5)
    assert sampler.sources == ["maps"]  # label weights keep coming from the synthetic label maps


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.2, 1.5])
def test_fractions_outside_the_open_interval_are_refused(fraction):
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        MixedSampler(Tagged(0), Tagged(1), fraction)


@pytest.fixture
def scene(tmp_path):
    """One 48^3 label map (1 mm, aseg values) and one real-like scan with aseg labels (1.5 mm)."""
    k, j, i = np.meshgrid(*[np.arange(48)] * 3, indexing="ij")
    r = np.sqrt((k - 24) ** 2 + (j - 24) ** 2 + (i - 24) ** 2)
    aseg = np.select([r < 4, r < 9, r < 14, r < 18, r < 21], [4, 10, 2, 3, 24], 0).astype(np.int16)
    map_path = tmp_path / "map_0.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(aseg), str(map_path))
    lut = np.zeros(25)
    lut[[4, 10, 2, 3, 24]] = [200, 600, 900, 500, 100]
    image = (lut[aseg] + np.random.default_rng(0).normal(0, 10, aseg.shape)).astype(np.float32)
    paths = []
    for name, array in (("scan_t1.nii.gz", image), ("scan_aseg.nii.gz", aseg)):
        volume = sitk.GetImageFromArray(array)
        volume.SetSpacing((1.5, 1.5, 1.5))
        sitk.WriteImage(volume, str(tmp_path / name))
        paths.append(str(tmp_path / name))
    return str(map_path), tuple(paths)


def test_a_run_with_labelled_scans_records_them_in_the_model_file(tmp_path, scene):
    label_map, (image, labels) = scene
    config = TrainingConfig(label_maps=[label_map], validation_maps=[label_map], run_dir=str(tmp_path / "run"),
                            patch_size=(32, 32, 32), validation_size=(32, 32, 32), steps=2, validate_every=2,
                            checkpoint_every=2, labelled_scans=[(image, labels)], labelled_fraction=0.5)
    torch.set_num_threads(1)
    trainer = Trainer(config)
    assert isinstance(trainer.generator, MixedSampler)
    assert trainer.generator.labelled.pairs[0].convention == "freesurfer"
    assert trainer.run()["status"] == "finished"
    metadata = read_metadata(tmp_path / "run" / "latest.safetensors")
    recorded = metadata["labelled_scans"][0]
    assert recorded["image_sha256"] == hashlib.sha256(open(image, "rb").read()).hexdigest()
    assert recorded["labels_sha256"] == hashlib.sha256(open(labels, "rb").read()).hexdigest()
    assert metadata["labelled_fraction"] == 0.5
    assert metadata["freeze_batchnorm"] is False


def test_a_run_without_labelled_scans_draws_synthetic_brains_only(tmp_path, scene):
    label_map, _ = scene
    config = TrainingConfig(label_maps=[label_map], run_dir=str(tmp_path / "run"), patch_size=(32, 32, 32), steps=1)
    assert not isinstance(Trainer(config).generator, MixedSampler)


def test_the_training_config_refuses_a_fraction_that_leaves_no_synthetic_brains(tmp_path, scene):
    label_map, pair = scene
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        TrainingConfig(label_maps=[label_map], run_dir=str(tmp_path), labelled_scans=[pair], labelled_fraction=1.0)


def test_the_cli_refuses_a_labelled_scan_that_is_not_an_image_labels_pair(tmp_path, scene, capsys):
    label_map, (image, _) = scene
    code = main(["train", "--label-maps", label_map, "--validation-maps", "none.nii.gz", "--run-dir",
                 str(tmp_path / "run"), "--labelled-scan", image, "--steps", "1", "--patch-size", "32"])
    assert code == 2
    assert "give IMAGE,LABELS" in capsys.readouterr().err
    assert not (tmp_path / "run" / "last.pt").exists()


def test_the_cli_trains_with_a_labelled_scan_and_frozen_batchnorm(tmp_path, scene, capsys):
    label_map, (image, labels) = scene
    code = main(["train", "--label-maps", label_map, "--validation-maps", "none.nii.gz", "--run-dir",
                 str(tmp_path / "run"), "--labelled-scan", f"{image},{labels}", "--labelled-fraction", "0.25",
                 "--freeze-batchnorm", "--steps", "2", "--validate-every", "2", "--patch-size", "32", "--threads", "1"])
    assert code == 0, capsys.readouterr().err
    config = json.loads(torch.load(tmp_path / "run" / "last.pt", weights_only=True)["config"])
    assert config["labelled_scans"] == [[image, labels]]
    assert config["labelled_fraction"] == 0.25 and config["freeze_batchnorm"] is True


def test_the_cli_trains_on_soft_labels_and_records_it(tmp_path, scene, capsys):
    label_map, (image, labels) = scene
    code = main(["train", "--label-maps", label_map, "--validation-maps", "none.nii.gz", "--run-dir",
                 str(tmp_path / "run"), "--labelled-scan", f"{image},{labels}", "--labelled-fraction", "0.9",
                 "--soft-labels", "--steps", "3", "--validate-every", "3", "--patch-size", "32", "--threads", "1"])
    assert code == 0, capsys.readouterr().err
    assert read_metadata(tmp_path / "run" / "latest.safetensors")["soft_labels"] is True
    losses = [json.loads(line)["loss"] for line in open(tmp_path / "run" / "log.jsonl")]
    assert len(losses) == 3 and all(np.isfinite(losses))
