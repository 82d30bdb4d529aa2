#!/bin/bash
# Evidence v2 from start to end, resumable: run it again after any stop (a new session, a fresh machine).
#   1. restore what earlier sessions committed (bench/results/versus/progress-h10) into OUT, never over a file there;
#   2. the references (9 networks x 2 seeds, 30 epochs, the plateau check first), one process of one thread;
#   3. beside them the searches of MENAS and random-MT (3 budgets x 5 seeds each, seed by seed, a pool of two
#      workers), and a third process retraining each finished search's choices (search.py --retrains-only);
#      once the searches end, two retrain processes share what is left;
#   4. save what is finished into the progress folder (commit it), and print both summaries.
# The recipe (short, 30 epochs, a 10% held-out part) is BENCHMARKS.md's "Does a higher peak learning rate converge
# sooner?" decision. Usage: bash bench/versus/run.sh [OUT]   (default runs/versus2)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-runs/versus2}
PROGRESS=bench/results/versus/progress-h10
PY=${PY:-.venv/bin/python}
POLL=${POLL:-600}  # seconds between two passes of the retrains
export PYTHONPATH=src
save() { "$PY" bench/versus/carry.py save --out "$OUT" --progress "$PROGRESS"; }
trap save EXIT
if [ -d "$PROGRESS" ]; then "$PY" bench/versus/carry.py restore --out "$OUT" --progress "$PROGRESS"; fi
REFS=(--out "$OUT" --epochs 30 --seeds 0 1 --plateau-check --threads 1 --set holdout_fraction=0.1)
SEARCH=(--out "$OUT" --references "$OUT/results.json")
"$PY" bench/versus/references.py "${REFS[@]}" --collect-only > /dev/null  # results.json: the searches' budgets
# Nothing waits on anything else: the references left (one process), the searches (one process, a pool of two
# workers) and the retrains of each finished search's choices (one process, a pass every POLL s) share the cores.
"$PY" bench/versus/references.py "${REFS[@]}" --workers 1 &
references=$!
"$PY" bench/versus/search.py "${SEARCH[@]}" --searches-only &
searches=$!
retrains() { "$PY" bench/versus/search.py "${SEARCH[@]}" --retrains-only; }
for _ in $(seq 1 100000); do  # bounded: 100,000 passes of 10 minutes are longer than all the searches take
  retrains
  save
  kill -0 "$searches" 2> /dev/null || break
  sleep "$POLL"
done
wait "$searches"
# the searches' cores are free: two processes retrain what is left (a job one of them trains is locked; the other
# skips it and takes the next), beside the references if any are left
retrains &
retrains
wait "$references" "$!"
"$PY" bench/versus/references.py "${REFS[@]}" --collect-only > /dev/null
"$PY" bench/versus/search.py "${SEARCH[@]}"  # whatever is still to retrain, then both summaries
cat "$OUT/table.md" "$OUT/search_summary.md"
