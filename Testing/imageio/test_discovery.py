"""Which cases a cohort holds: folders searched recursively (volume files and DICOM series folders), .txt/.csv
lists, unique case ids, and a clear error for each input that can't be used."""
import pytest
import SimpleITK as sitk

from conftest import phantom, write_dicom_series
from SegLossBrainLib.imageio.discovery import discover_cases
from SegLossBrainLib.imageio.volumes import InputError, write_image


@pytest.fixture
def image():
    return phantom(size=(20, 18, 6), spacing=(1.0, 1.0, 2.0))[0]


@pytest.fixture
def tree(tmp_path, image):
    """in/sub-01/T1.nii.gz, in/sub-02/T1.nrrd, in/sub-02/series/*.dcm, and files that are not cases."""
    root = tmp_path / "in"
    (root / "sub-01").mkdir(parents=True)
    write_image(image, root / "sub-01" / "T1.nii.gz")
    (root / "sub-02").mkdir()
    write_image(image, root / "sub-02" / "T1.nrrd")
    write_dicom_series(sitk.Cast(image, sitk.sitkInt16), root / "sub-02" / "series")
    write_image(image, root / "sub-02" / "old.seg.nrrd")  # a segmentation, not an image
    (root / "sub-01" / "notes.txt").write_text("not a list: only given lists are read")
    (root / "sub-01" / ".tmp-123.nii.gz").write_bytes(b"half written")
    return root


def ids_and_paths(cases):
    return {c.case_id: c.path for c in cases}


def test_folder_is_searched_recursively_with_dicom_series_as_cases(tree):
    cases = ids_and_paths(discover_cases([tree]))
    # Both T1 files have the stem "T1": the parent folder names make them differ.
    assert cases == {"sub-01_T1": tree / "sub-01" / "T1.nii.gz", "sub-02_T1": tree / "sub-02" / "T1.nrrd",
                     "series": tree / "sub-02" / "series"}


def test_skip_leaves_out_files_found_by_a_search_and_one_file_twice_is_one_case(tree):
    cases = discover_cases([tree, tree / "sub-01" / "T1.nii.gz"], skip=lambda p: p.suffix == ".nrrd")
    # With the .nrrd left out, "T1" no longer collides: ids come from the whole list of cases.
    assert ids_and_paths(cases) == {"T1": tree / "sub-01" / "T1.nii.gz", "series": tree / "sub-02" / "series"}


def test_txt_and_csv_lists(tree, tmp_path):
    listing = tree / "cases.txt"
    listing.write_text("# my cohort\nsub-01/T1.nii.gz\n\nsub-02/series\n")
    assert ids_and_paths(discover_cases([listing])) == {"T1": tree / "sub-01" / "T1.nii.gz",
                                                        "series": tree / "sub-02" / "series"}
    table = tmp_path / "cases.csv"
    table.write_text(f"subject,path\nalpha,{tree / 'sub-01' / 'T1.nii.gz'}\nbeta,in/sub-02/T1.nrrd\n")
    assert ids_and_paths(discover_cases([table])) == {"alpha": tree / "sub-01" / "T1.nii.gz",
                                                      "beta": tree / "sub-02" / "T1.nrrd"}


def test_inputs_that_cannot_be_used_are_refused_up_front(tree, tmp_path):
    with pytest.raises(InputError, match="no such file or folder"):
        discover_cases([tmp_path / "missing"])
    (tmp_path / "empty" / "deeper").mkdir(parents=True)
    with pytest.raises(InputError, match="holds no volume"):
        discover_cases([tmp_path / "empty"])
    listing = tmp_path / "list.txt"
    listing.write_text(f"{tree / 'sub-01' / 'T1.nii.gz'}\ngone.nii.gz\n")
    with pytest.raises(InputError, match=r"1 missing file.*gone\.nii\.gz \(line 2\)"):
        discover_cases([listing])


def test_two_inputs_with_one_output_name_are_refused(tmp_path, image):
    write_image(image, tmp_path / "x.nii")
    write_image(image, tmp_path / "x.nii.gz")
    with pytest.raises(InputError, match=r"x\.nii and .*x\.nii\.gz would be written under the same case id 'x'"):
        discover_cases([tmp_path / "x.nii", tmp_path / "x.nii.gz"])
