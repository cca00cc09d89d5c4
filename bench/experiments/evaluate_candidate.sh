#!/usr/bin/env bash
# Every check a candidate model must pass before it may replace the shipped default (issue 29's rule), paired
# against the baseline on the same images, written to OUT/:
#   full_head.md   held-out synthetic whole brains from the full-head maps 19-20 (24 images, seed 555)
#   fs_maps.md     held-out synthetic brains from the two FreeSurfer-convention maps held out of training (12 images)
#   composite.md   those two maps placed inside the full-head maps 19-20: skull-on heads drawn FreeSurfer's way (12)
#   probes.md/csv  real dev scans (bert, voxelmorph): original, 5 mm slices, 3 mm, inverted contrast, per structure
# Usage: bench/experiments/evaluate_candidate.sh BASELINE.safetensors CANDIDATE.safetensors OUT [THREADS]
set -euo pipefail
baseline=$1 candidate=$2 out=$3 threads=${4:-2}
here="$(cd "$(dirname "$0")" && pwd)"
mkdir -p "$out"
cd "$here"
python compare_models.py "$baseline" "$candidate" --draws 12 --threads "$threads" | grep -v '^draw' > "$out/full_head.md"
python compare_models.py "$baseline" "$candidate" --draws 6 --threads "$threads" --fs-maps | grep -v '^draw' > "$out/fs_maps.md"
python compare_models.py "$baseline" "$candidate" --draws 3 --threads "$threads" --composite-heads | grep -v '^draw' > "$out/composite.md"
python robustness_probes.py "$baseline" "$candidate" --threads "$threads" --csv "$out/probes.csv" > "$out/probes.md"
cat "$out/full_head.md" "$out/fs_maps.md" "$out/composite.md" "$out/probes.md"
