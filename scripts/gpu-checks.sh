#!/usr/bin/env bash
# The GPU checks of a lent GPU machine (BENCHMARKS.md "GPU checks"), one short script: the CUDA tests, RandAugment
# img/s on the GPU, and the retrain table of issue 9 (the demo's winner against timm's MobileNetV3s, same recipe).
# Run from the repository root with the machine's own python3 (torch, timm, safetensors, rich there) and
# Fashion-MNIST's IDX files in $DATA (default .data/fashion-mnist), results under $OUT (default /tmp/gpu-checks):
#   WINNER='<genome string>' EPOCHS=20 bash scripts/gpu-checks.sh
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
