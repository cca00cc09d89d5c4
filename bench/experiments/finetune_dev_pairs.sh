#!/bin/bash
# Issue 5 section 3 (reduced): fine-tune the shipped model on one dev scan, evaluate on the other, per loss.
# Usage: bash bench/experiments/finetune_dev_pairs.sh TRAIN_IMG TRAIN_ASEG EVAL_IMG EVAL_ASEG TAG STEPS
# Env: LOSSES="wce gdl explog" (default), THREADS=2, EXTRA="--freeze-encoder --lr 3e-5" (more finetune options).
. "$(dirname "$0")/../../.venv/bin/activate"
export SEGLOSSBRAIN_MODEL_STORE=${SEGLOSSBRAIN_MODEL_STORE:-/tmp/ftstore}
D="${SEGLOSSBRAIN_DATA:-$(dirname "$0")/../../../shared/data}/real_dev"
train_img=$1; train_lab=$2; eval_img=$3; eval_lab=$4; tag=$5; steps=$6
for loss in ${LOSSES:-wce gdl explog}; do
  start=$(date +%s)
  seglossbrain finetune --pairs $D/$train_img,$D/$train_lab --loss $loss --steps $steps --name $tag-$loss --seed 0 --precision bf16 --threads ${THREADS:-2} $EXTRA > /tmp/ft_${tag}_${loss}.log 2>&1
  rc=$?
  end=$(date +%s)
  echo "$tag $loss rc=$rc finetune_s=$((end-start))"
  seglossbrain evaluate --images $D/$eval_img --labels $D/$eval_lab --aseg --model $SEGLOSSBRAIN_MODEL_STORE/$tag-$loss.safetensors --device cpu --csv /tmp/ft_${tag}-${loss}.csv 2>/dev/null | grep "mean Dice"
done
