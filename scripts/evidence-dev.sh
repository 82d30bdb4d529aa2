#!/usr/bin/env bash
# The evidence benchmark's seeds FROM..SEEDS-1 on a many-core host's CPU (e.g. a lent GPU machine): every arm side by
# side, each a pool of 2 one-thread workers (base.yaml), device=cpu, so 7 arms take 14 cores. Resumable like
# bench/evidence/run.py; the runs folder goes to $OUT/runs.tgz when $OUT is set (cut at LIMIT seconds).
#   DATA=.data/fashion-mnist FROM=2 SEEDS=3 LIMIT=470 bash scripts/evidence-dev.sh
set -u
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
RUNS=${RUNS:-runs/evidence-dev}
mkdir -p "$RUNS"
lscpu | grep -E "Model name|Flags" > "$RUNS/lscpu.txt"
for arm in ${ARMS:-menas menas-no-tickets random-mt evolution random-ws menas-inherit menas-keep-largest}; do
  timeout -s INT -k 15 "${LIMIT:-470}" python3 bench/evidence/run.py --seeds "${SEEDS:-3}" --from-seed "${FROM:-2}" \
    --arms "$arm" --out "$RUNS" --set device=cpu --set "data.root=${DATA:-.data/fashion-mnist}" \
    > "$RUNS/$arm.log" 2>&1 &
done
wait
pkill -9 -f "bench/evidence/run.py" || true; pkill -9 -f "multiprocessing.spawn" || true  # cut pool workers too
tail -n 2 "$RUNS"/*.log
if [ -n "${OUT:-}" ]; then tar czf "$OUT/runs.tgz" "$RUNS"; fi
