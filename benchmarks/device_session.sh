#!/usr/bin/env bash
# One prepared session on a lent GPU machine (16 CPU cores + one H100/H200), run from the repo root:
#   1. PPOElmur vs RecurrentPPO speed on the GPU (benchmarks/bench_speed.py --device cuda);
#   2. meanwhile, the POPGym RepeatFirst/RepeatPrevious grid (3 algos x 3 seeds, 500k steps each)
#      on the machine's CPU cores, one torch thread per run, as on the 2-core CPU.
# Runs still going when BUDGET seconds are up get SIGTERM: train.py then saves a checkpoint and
# writes summary.json with status "interrupted" (never counted as finished in the tables).
# The Python packages the machine lacks travel as wheels in .whl/ (see /work/.library/device).
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
BUDGET=${BUDGET:-480}
EV=/tmp/ev
mkdir -p $EV
{ nproc; nvidia-smi -L; python3 -c "import torch, stable_baselines3, sb3_contrib, popgym; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"; } | tee $EV/machine.txt
( timeout -s TERM $BUDGET python3 benchmarks/bench_speed.py --device cuda --rounds 2 --latency-steps 10000 \
    --skip-defaults --out $EV/speed_gpu.json > $EV/speed_gpu.log 2>&1 ) &
for env in popgym-RepeatFirst popgym-RepeatPrevious; do
  ( timeout -s TERM $BUDGET python3 train.py compare --env $env --algos ppo-elmur ppo-lstm ppo --seeds 3 \
      --timesteps 500000 --jobs 9 --out $EV/$env > $EV/$env.log 2>&1 ) &
done
wait
for env in popgym-RepeatFirst popgym-RepeatPrevious; do
  python3 train.py compare --env $env --algos ppo-elmur ppo-lstm ppo --seeds 3 --out $EV/$env --table-only >> $EV/$env.log 2>&1
done
tail -n 30 $EV/*.log
# Keep every final_model.zip (a published figure needs its model beside it; an earlier version of this
# script dropped all zips and the models behind a table were lost); checkpoints and best models stay behind.
tar czf "$OUT/evidence.tgz" --exclude='checkpoints' --exclude='best_model.zip' -C /tmp ev
ls -la "$OUT"
