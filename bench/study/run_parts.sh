#!/usr/bin/env bash
# Run one loss study as N background processes (one core each, lowest priority), each its own --part K/N.
# A part that has trained its share but must wait (V-Net needs every part's Wong runs) retries every 5 minutes.
# Stop all parts with SIGTERM (each writes its checkpoint); run this script again with the same options to go on.
#   bench/study/run_parts.sh N LOG_PREFIX study-options...    e.g.
#   bench/study/run_parts.sh 2 runs/loss_study --out runs/loss_study --steps 4000 --patch-size 48 ...
set -u
parts=$1; log=$2; shift 2
for k in $(seq 1 "$parts"); do
  (
    while true; do
      OMP_NUM_THREADS=1 nice -n 19 seglossbrain --progress-json study "$@" --threads 1 --part "$k/$parts" \
        >> "${log}_part$k.log" 2>&1
      status=$?
      tail -n 1 "${log}_part$k.log" | grep -q "waiting for the other parts" || break
      sleep 300
    done
    echo "part $k/$parts ended (exit $status)" >> "${log}_part$k.log"
  ) &
  echo "part $k/$parts: pid $!, log ${log}_part$k.log"
done
