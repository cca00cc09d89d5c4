# call 1: check the GPU software, run the CUDA test, measure steps/s of the two arms side by side
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, SimpleITK; print('torch', torch.__version__, 'sitk', SimpleITK.__version__, torch.cuda.get_device_name())"
python3 -m pytest Testing/synthesis/test_synth.py Testing/training/test_training.py -q -x -p no:cacheprovider -k "cuda or schedule or noise" 2>&1 | tail -2
t0=$(date +%s)
for arm in A B; do
  extra=""; [ $arm = B ] && extra="--input-noise-std 0"
  python3 gpu_carry/seglossbrain_cli.py train --label-maps /tmp/lm --validation-maps training_seg_19.nii,training_seg_20.nii \
    --device cuda --precision bf16 --patch-size 128 --steps 60 --validate-every 60 --checkpoint-every 60 --threads 4 \
    --init-weights Resources/Models/wong2018-explog.safetensors --lr 1e-4 $extra --run-dir runs/probe_$arm > runs/probe_$arm.out 2>&1 &
done
wait
echo "probe wall $(( $(date +%s) - t0 )) s"
for arm in A B; do python3 -c "
import json;r=[json.loads(l) for l in open('runs/probe_$arm/log.jsonl')]
print('$arm s/step (steps 20-60):', round((r[59]['elapsed_s']-r[19]['elapsed_s'])/40,4), 'val', r[-1].get('validation',{}).get('score'))"; done
tail -c 600 runs/probe_A.out | tr '\r' '\n' | tail -3
nvidia-smi --query-gpu=memory.used --format=csv,noheader
