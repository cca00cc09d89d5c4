#!/usr/bin/env bash
# Copy a study's report (tables and plots) into docs/loss_study/, refreshing it first from what is on disk.
# Unfinished runs are reported with the step they reached, so a partial study can be published as such.
#   bench/study/publish.sh runs/loss_study
set -euo pipefail
study=${1:?usage: bench/study/publish.sh STUDY_FOLDER}
cd "$(dirname "$0")/../.."
seglossbrain study --out "$study" --report-only --device cpu --threads 1 > /dev/null
mkdir -p docs/loss_study
for f in results.md results.csv validation_curves.png structure_dice.png lr_sensitivity.png; do
  cp "$study/$f" "docs/loss_study/$f.tmp" && mv "docs/loss_study/$f.tmp" "docs/loss_study/$f"
done
echo "published $study to docs/loss_study/"
