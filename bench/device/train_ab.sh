# usage: bash gpu_carry/train_ab.sh SECONDS STEPS [resume]
# A: the paper's input noise (std 1 x image std); B: input noise off. Same seed, same synthetic stream.
SECONDS_BUDGET=$1; STEPS=$2; RESUME=$3
common="train --label-maps /tmp/lm --validation-maps training_seg_19.nii,training_seg_20.nii --device cuda
  --precision bf16 --patch-size 128 --lr 1e-3 --lr-schedule poly --warmup-steps 200 --steps $STEPS
  --checkpoint-every 250 --validate-every 500 --threads 4 --seed 0"
for arm in A B; do
  extra=""; [ $arm = B ] && extra="--input-noise-std 0"
  if [ "$RESUME" = resume ] && [ -f runs/gpu_$arm/last.pt ]; then start="--resume"; else
    start="--init-weights Resources/Models/wong2018-explog.safetensors"; fi
  timeout -s TERM -k 25 $SECONDS_BUDGET python3 gpu_carry/seglossbrain_cli.py $common $extra $start --run-dir runs/gpu_$arm \
    > runs/gpu_$arm.out 2>&1 &
done
wait
for arm in A B; do
  # weights and their .json (metadata + checksum) travel back together in one tar per arm
  tar cf $OUT/${arm}_weights.tar -C runs/gpu_$arm best.safetensors best.json latest.safetensors latest.json 2>/dev/null
  tail -c 3000 runs/gpu_$arm.out | tr '\r' '\n' | grep -v "^training:" | tail -8
  python3 -c "
import json;r=[json.loads(l) for l in open('runs/gpu_$arm/log.jsonl')];v=[x for x in r if 'validation' in x]
print('$arm', 'step', r[-1]['step'], 'elapsed', r[-1]['elapsed_s'], [(x['step'], round(x['validation'].get('score',0),4)) for x in v])"
done
tar czf $OUT/logs.tgz runs/gpu_A/log.jsonl runs/gpu_B/log.jsonl runs/gpu_A/curves.png runs/gpu_B/curves.png runs/gpu_A.out runs/gpu_B.out 2>/dev/null
