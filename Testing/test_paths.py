"""Where the engine looks for the data folder and the user model store, and the data's split constants."""
from pathlib import Path

import pytest

from SegLossBrainLib import paths
from SegLossBrainLib.cli import main


def test_data_folder_comes_from_the_environment_first(monkeypatch, tmp_path):
    monkeypatch.setenv(paths.DATA_ENV, str(tmp_path))
    assert paths.find_data_dir() == tmp_path
    assert paths.label_maps_dir() == tmp_path / "synthseg_label_maps"


def test_an_environment_variable_naming_no_folder_is_an_error(monkeypatch, tmp_path):
    monkeypatch.setenv(paths.DATA_ENV, str(tmp_path / "missing"))
    with pytest.raises(paths.DataNotFoundError, match=f"{paths.DATA_ENV}=.*missing is not a folder"):
        paths.find_data_dir()


def test_without_a_checkout_nor_the_variable_the_error_says_what_to_set(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv(paths.DATA_ENV, raising=False)
    monkeypatch.setattr(paths, "_CHECKOUT", tmp_path / "site-packages")  # as in a wheel install
    assert paths.find_data_dir() is None
    with pytest.raises(paths.DataNotFoundError, match=f"set {paths.DATA_ENV} .*or pass --label-maps"):
        paths.label_maps_dir()
    assert main(["train", "--steps", "1", "--run-dir", str(tmp_path / "run")]) == 2
    assert f"set {paths.DATA_ENV}" in capsys.readouterr().err
    assert main(["study", "--out", str(tmp_path / "study"), "--steps", "1", "--patch-size", "32"]) == 2
    assert "or pass --data or --label-maps" in capsys.readouterr().err


def test_held_out_maps_are_split_by_file_name():
    maps = [f"/data/training_seg_{i:02d}.nii.gz" for i in range(1, 21)]
    training, held_out = paths.split_held_out(maps)
    assert [Path(m).name for m in held_out] == list(paths.HELD_OUT_MAPS)
    assert len(training) == 18 and not set(training) & set(held_out)


def test_user_model_store_follows_its_variable(monkeypatch, tmp_path):
    monkeypatch.setenv(paths.MODEL_STORE_ENV, str(tmp_path / "store"))
    assert paths.user_model_store() == tmp_path / "store"
    monkeypatch.delenv(paths.MODEL_STORE_ENV)
    assert paths.user_model_store() == Path.home() / ".seglossbrain" / "models"
