#!/usr/bin/env bash
# The GPU checks of a lent GPU machine (BENCHMARKS.md "GPU checks"), one short script: the CUDA tests, RandAugment
# img/s on the GPU, and the retrain table of issue 9 (the demo's winner against timm's MobileNetV3s, same recipe).
# Run from the repository root with the machine's own python3 (torch, timm, safetensors, rich there) and
# Fashion-MNIST's IDX files in $DATA (default .data/fashion-mnist), results under $OUT (default /tmp/gpu-checks):
#   WINNER='<genome string>' EPOCHS=20 bash scripts/gpu-checks.sh
# Issue 21 (a GPU filled with many short trials), each part one call of its own:
#   PARTS=gpu21 bash scripts/gpu-checks.sh        # bench/bench_gpu.py, under 8 min: the first epoch per cause,
#                                                 # img/s at K = 1, 2, 4, 8 per GPU, trials per hour GPU vs CPU
#   PARTS=gpu21-cuda bash scripts/gpu-checks.sh   # ~3 min: K trials on one GPU score as one at a time; one out of
#                                                 # memory is failed and its neighbours finish (tests/test_cuda.py)
#   PARTS=gpu21-mps VARIANT=tf32 bash scripts/gpu-checks.sh  # ~3 min: the K sweep and K = 4 trials under CUDA MPS
#                                                 # (a user-level daemon started in /tmp/menas-mps, quit at the end)
# Measured on an H200 (BENCHMARKS.md "GPU checks"): ~5 s per epoch of the demo's winner and ~6.5 s of
# mobilenetv3_large_100 at batch 512, so the four arms of 20 epochs take ~9 min; arms run one after the other
# (side by side, the processes time-slice the GPU and were slower). A killed table resumes only on the same
# machine: a lent machine is bare again after it is given back.
set -u
OUT=${OUT:-/tmp/gpu-checks}
DATA=${DATA:-.data/fashion-mnist}
EPOCHS=${EPOCHS:-20}
BATCH=${BATCH:-512}
TABLE_S=${TABLE_S:-360}
PARTS=${PARTS:-"tests bench table"}  # one call allows 10 minutes: the table of 20 epochs needs a call of its own
mkdir -p "$OUT"
export PYTHONPATH=$PWD/src:$PWD/tests PYTHONUNBUFFERED=1
python3 - <<'EOF' | tee "$OUT/versions.txt"
import platform, torch, torchvision, timm
print("torch", torch.__version__, "torchvision", torchvision.__version__, "timm", timm.__version__,
      "python", platform.python_version())
print("gpu", torch.cuda.get_device_name(), "cuda", torch.version.cuda, "bf16", torch.cuda.is_bf16_supported())
EOF
if [[ $PARTS == *tests* ]]; then
echo "== CUDA tests"
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_cost_builder.py -k cuda \
  2>&1 | tee "$OUT/pytest.log" | tail -15
fi
if [[ $PARTS == *bench* ]]; then
echo "== RandAugment img/s on the GPU (bench/bench_retrain.py)"
timeout 60 python3 bench/bench_retrain.py --quick --device cuda --root "$DATA" > "$OUT/bench_retrain.json" \
  2> "$OUT/bench_retrain.err"; tail -3 "$OUT/bench_retrain.err"; python3 - "$OUT/bench_retrain.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
print({k: r[k] for k in ("device", "best", "ratio_randaugment", "ratio_paper")})
EOF
fi
if [[ $PARTS == *table* ]]; then
echo "== retrain table (bench/bench_retrain_table.py), $EPOCHS epochs at batch $BATCH"
timeout "$TABLE_S" python3 bench/bench_retrain_table.py --winner "$WINNER" --epochs "$EPOCHS" --batch "$BATCH" \
  --root "$DATA" --device cuda --parallel 1 --set train.ema_warmup=true --out "$OUT/table" 2>&1 | tee "$OUT/table.log"
cp "$OUT/table/results.json" "$OUT/table/table.md" "$OUT/" 2>/dev/null
tar czf "$OUT/table-records.tgz" -C "$OUT/table" $(cd "$OUT/table" && ls */retrain.json *.log 2>/dev/null)
rm -rf "$OUT/table"
fi
if [[ " $PARTS " == *" gpu21 "* ]]; then
echo "== issue 21: first epoch per cause, K trials per GPU, trials per hour (bench/bench_gpu.py, < ${GPU21_S:-470} s)"
[[ -d $DATA ]] || echo "no Fashion-MNIST in DATA=$DATA: copy /usr/share/datasets/fashion-mnist there first"
timeout -k 10 "${GPU21_S:-470}" python3 bench/bench_gpu.py --root "$DATA" --seconds "${BENCH_S:-440}" \
  --out "$OUT/bench_gpu.json" 2> "$OUT/bench_gpu.log" | tee "$OUT/bench_gpu.txt"
tail -4 "$OUT/bench_gpu.log"
fi
if [[ " $PARTS " == *" gpu21-cuda "* ]]; then
echo "== issue 21: CUDA tests of trials sharing one GPU"
timeout -k 10 240 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py -k "sharing_one_gpu or shared_gpu" \
  2>&1 | tee "$OUT/pytest-gpu21.log" | tail -15
fi
if [[ " $PARTS " == *" gpu21-mps "* ]]; then
echo "== issue 21 under CUDA MPS: the K sweep and trials per hour at K = 4, variant ${VARIANT:-base}"
if command -v nvidia-cuda-mps-control > /dev/null; then
  export CUDA_MPS_PIPE_DIRECTORY=/tmp/menas-mps/pipe CUDA_MPS_LOG_DIRECTORY=/tmp/menas-mps/log
  mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
  nvidia-cuda-mps-control -d && sleep 1
  timeout -k 10 "${MPS_S:-200}" python3 bench/bench_gpu.py --root "$DATA" --parts sweep,trials --seconds 180 \
    --sweep-variant "${VARIANT:-base}" --trial-runs "${VARIANT:-base}:4" --out "$OUT/bench_gpu_mps.json" \
    2> "$OUT/bench_gpu_mps.log" | tee "$OUT/bench_gpu_mps.txt"
  echo quit | nvidia-cuda-mps-control
  cp -r "$CUDA_MPS_LOG_DIRECTORY" "$OUT/mps-log" 2>/dev/null
else
  echo "no nvidia-cuda-mps-control on this machine: no MPS figures"
fi
fi
