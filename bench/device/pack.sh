#!/usr/bin/env bash
# Build gpu_carry/ (git-ignored) for training on the lent GPU machine (library tool `device`), which has torch
# but neither SimpleITK nor ../shared. The call's working tree is limited to 64 MiB, so everything is xz-packed:
# SimpleITK's wheel unpacked (262 MB -> 28 MB), the 20 label maps as raw .nii (32 MB gz -> 11 MB), the MNE head
# for the inference benchmark. Takes ~3 min on 2 cores. Run from the repository root.
set -euo pipefail
DATA=${DATA:-${SEGLOSSBRAIN_DATA:-../shared/data}}
mkdir -p gpu_carry && work=$(mktemp -d) && trap 'rm -rf "$work"' EXIT
version=$(python -c "import SimpleITK; print(SimpleITK.__version__)")
python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux2014_x86_64 -d "$work" "SimpleITK==$version"
mkdir "$work/site" && (cd "$work/site" && unzip -q "$work"/simpleitk-*.whl && tar cf - . | xz -9 -T2 > "$OLDPWD/gpu_carry/sitk.tar.xz")
mkdir "$work/maps" && for f in "$DATA"/synthseg_label_maps/*.nii.gz; do gunzip -c "$f" > "$work/maps/$(basename "$f" .gz)"; done
(cd "$work/maps" && tar cf - *.nii | xz -9 -T2 > "$OLDPWD/gpu_carry/lm.tar.xz")
cp "$DATA/real_dev/mne_sample_T1_skull_unlabeled.nii.gz" gpu_carry/mne.nii.gz
cp bench/device/*.sh bench/device/seglossbrain_cli.py gpu_carry/
du -sh gpu_carry
