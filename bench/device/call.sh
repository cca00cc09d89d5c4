# one device call: bash gpu_carry/call.sh LIMIT_S TOTAL_TRAIN_S [probe]
# trains both arms until LIMIT_S after this call's start (less 30 s to copy results back)
T0=$(date +%s); LIMIT=$1; TOTAL=$2
source gpu_carry/env.sh || exit 1
mkdir -p runs
if [ "$3" = probe ]; then bash gpu_carry/probe.sh; fi
if [ ! -f runs/steps.txt ]; then
  python3 - "$TOTAL" > runs/steps.txt <<'PY'
import json, sys
rates = []
for arm in "AB":
    r = [json.loads(l) for l in open(f"runs/probe_{arm}/log.jsonl")]
    rates.append((r[59]["elapsed_s"] - r[19]["elapsed_s"]) / 40)
print(int(float(sys.argv[1]) * 0.85 / max(rates)))
PY
fi
STEPS=$(cat runs/steps.txt); echo "steps for the poly schedule: $STEPS"
BUDGET=$(( LIMIT - ($(date +%s) - T0) - 30 ))
echo "training for $BUDGET s"
bash gpu_carry/train_ab.sh $BUDGET $STEPS resume
nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv,noheader
