#!/usr/bin/env bash
# Issue 12 on a lent GPU machine, one short call: the CUDA tests (an inheriting pool search among them), then the
# evidence benchmark's menas and menas-inherit arms (seed 0, device=cuda, one worker) one after the other for
# ARM_S seconds each, and per trial role the wall seconds of training, lottery and fine-tuning (what an inherited
# child saves on a GPU). Run from the repository root with the machine's python3 and Fashion-MNIST in $DATA:
#   DATA=.data/fashion-mnist ARM_S=150 bash scripts/gpu-inherit.sh
set -u
OUT=${OUT:-/tmp/gpu-inherit}
mkdir -p "$OUT"
export PYTHONPATH=$PWD/src:$PWD/tests PYTHONUNBUFFERED=1
python3 -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__, torch.cuda.get_device_name())"
lscpu | grep -E "Model name" ; nproc
echo "== CUDA tests"
timeout 180 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$OUT/pytest.log" | tail -8
for arm in menas menas-inherit; do
  echo "== $arm seed 0 on cuda for ${ARM_S:-150} s"
  timeout -s INT -k 10 "${ARM_S:-150}" python3 bench/evidence/run.py --seeds 1 --arms "$arm" --out "$OUT/evidence" \
    --set device=cuda --set executor.workers=1 --set "data.root=${DATA:-.data/fashion-mnist}" > "$OUT/$arm.log" 2>&1
  pkill -9 -f multiprocessing.spawn || true
  python3 bench/bench_trial_phases.py --run "$OUT/evidence/runs/$arm-s0"
done
