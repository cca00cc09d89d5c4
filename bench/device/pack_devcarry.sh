#!/usr/bin/env bash
# Makes .devcarry/ (git-ignored): what a device call needs that the bare device machine lacks, under the
# 64 MiB a call may carry with the working tree. Used in session 7 (bench/device/h200_mixed_training_and_finetune_runs*.py).
#   * SimpleITK, unpacked from its manylinux wheel and xz-compressed (53 MB wheel -> 29 MB);
#   * the 20 training label maps as uint16 (same grids, same values: checked), uncompressed .nii in one
#     xz tarball (32 MB of float32 .nii.gz -> 9 MB); the device gzips them back to the names the code expects;
#   * the two labelled real dev scans, unchanged (their sha256 is recorded by training runs).
# The call also left the demo volume and the four largest PNGs out of the tree (git rm --cached + exclude,
# restored afterwards) to fit. Run from the repository root with the venv active.
set -euo pipefail
DATA=${SEGLOSSBRAIN_DATA:-../shared/data}
mkdir -p .devcarry/data/real_dev /tmp/devcarry_whl/x
grep -qx '/.devcarry/' .git/info/exclude || echo '/.devcarry/' >> .git/info/exclude
python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux2014_x86_64 -d /tmp/devcarry_whl SimpleITK==2.5.7
(cd /tmp/devcarry_whl/x && unzip -qo ../simpleitk-*.whl && tar cJf - .) > .devcarry/sitk.tar.xz
python - "$DATA" <<'PY'
import sys, pathlib, numpy as np, SimpleITK as sitk
src = pathlib.Path(sys.argv[1]) / "synthseg_label_maps"
dst = pathlib.Path(".devcarry/data/synthseg_label_maps"); dst.mkdir(parents=True, exist_ok=True)
for path in sorted(src.glob("training_seg_*.nii.gz")):
    image = sitk.ReadImage(str(path))
    compact = sitk.Cast(image, sitk.sitkUInt16)
    assert np.array_equal(sitk.GetArrayFromImage(compact), sitk.GetArrayFromImage(image)), path
    sitk.WriteImage(compact, str(dst / path.name[:-3]), False)
PY
(cd .devcarry && tar cf - data/synthseg_label_maps | xz -6 -T2 > maps.tar.xz && rm -r data/synthseg_label_maps)
cp "$DATA"/real_dev/bert_fs7.2_* "$DATA"/real_dev/vxm_test_* .devcarry/data/real_dev/
du -sh .devcarry
