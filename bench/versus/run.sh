#!/bin/bash
# Evidence v2 from start to end, resumable: run it again after any stop (a new session, a fresh machine).
#   1. restore what earlier sessions committed (bench/results/versus/progress-h10) into OUT, never over a file there;
#   2. the references (9 networks x 2 seeds, 30 epochs, the plateau check first), two processes of one thread;
#   3. the searches of MENAS and random-MT (3 budgets x 5 seeds each), then each search's choices retrained;
#   4. save what is finished into the progress folder (commit it), and print both summaries.
# The recipe (short, 30 epochs, a 10% held-out part) is BENCHMARKS.md's "Does a higher peak learning rate converge
# sooner?" decision. Usage: bash bench/versus/run.sh [OUT]   (default runs/versus2)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-runs/versus2}
PROGRESS=bench/results/versus/progress-h10
PY=${PY:-.venv/bin/python}
export PYTHONPATH=src
save() { "$PY" bench/versus/carry.py save --out "$OUT" --progress "$PROGRESS"; }
trap save EXIT
if [ -d "$PROGRESS" ]; then "$PY" bench/versus/carry.py restore --out "$OUT" --progress "$PROGRESS"; fi
"$PY" bench/versus/references.py --out "$OUT" --epochs 30 --seeds 0 1 --plateau-check --threads 1 --workers 2 \
  --set holdout_fraction=0.1
save
"$PY" bench/versus/search.py --out "$OUT" --references "$OUT/results.json"
cat "$OUT/table.md" "$OUT/search_summary.md"
