#!/bin/bash
# issue 20: does a higher peak lr converge sooner? small_100, seed 0, 20 epochs, lr x1/x2/x4, a 10% held-out split
cd /work/main
export PYTHONPATH=src
while pgrep -f "bench/latency_search.py" > /dev/null; do sleep 20; done
run() {  # $1 = name, $2 = lr_base
  .venv/bin/python bench/versus/references.py --out runs/recipe/$1 --epochs 20 --seeds 0 \
    --networks mobilenetv3_small_100 --threads 1 --workers 1 \
    --set train.lr_base=$2 --set holdout_fraction=0.1 > runs/recipe/$1.log 2>&1
}
run lr4 0.128 &
run lr2 0.064 &
wait
run lr1 0.032
echo DONE
