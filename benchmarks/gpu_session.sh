#!/usr/bin/env bash
# The paper's CIFAR-100 comparison on a lent GPU machine (docs/reproduce.rst).
#
# Run from the repository root on the GPU machine, in three back-to-back calls
# of the device tool (the CIFAR-100 parts are too big for one call's carry):
#
#   1. bash benchmarks/gpu_session.sh stage   carry .gpu/whl, .gpu/cifar100/train_data.part0.npy.xz
#   2. bash benchmarks/gpu_session.sh stage   carry .gpu/cifar100/train_data.part1.npy.xz
#   3. bash benchmarks/gpu_session.sh run     carry .gpu/whl, .gpu/cifar100/train_data.part2.npy.xz,
#                                                   .gpu/cifar100/test_data.npy.xz, .gpu/cifar100/labels.npz
#
# "stage" moves the carried files out of the checkout to $DATA, which stays
# while the machine is warm. "run" trains the teacher and the six variants
# (wrn_40_2 -> wrn_16_2, --epochs 60 by default) under a time budget and copies
# the results, the plots and the teacher's weights (with a SOURCE note) to $OUT.
# If the budget stopped it early, "run" again (same warm machine) continues.
# "bench" (a separate call, if device time is left) measures lockstep against
# separate fits (benchmarks/bench_lockstep.py) and writes $OUT/lockstep.md.
#
# Settings (environment): EPOCHS (60), BUDGET seconds (480), DATA
# (/root/cifar100), RUNS (/root/repro_e$EPOCHS), PAIR (wrn_40_2:wrn_16_2),
# DATASET (cifar100), EXTRA (more reproduce flags, e.g. "--subset 5000").
set -euo pipefail

stage=${1:?usage: gpu_session.sh stage|run|bench}
EPOCHS=${EPOCHS:-60}
PAIR=${PAIR:-wrn_40_2:wrn_16_2}
DATASET=${DATASET:-cifar100}
TEACHER=${PAIR%%:*}
BUDGET=${BUDGET:-480}
DATA=${DATA:-/root/cifar100}
RUNS=${RUNS:-/root/repro_e${EPOCHS}}
OUT=${OUT:-/tmp/projkd-out}
mkdir -p "$DATA" "$OUT"

# skorch is not on the GPU machine: install the carried wheel once
if [ -d .gpu/whl ] && ! [ -d /tmp/site/skorch ]; then
    python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/*.whl
fi
export PYTHONPATH=/tmp/site:.

if [ -d .gpu/cifar100 ]; then
    find .gpu/cifar100 -maxdepth 1 -type f -exec mv -f {} "$DATA/" \;
fi
echo "data in $DATA:"; ls -l "$DATA"

if [ "$stage" = stage ]; then
    exit 0
fi
if [ "$stage" = bench ]; then
    python3 benchmarks/bench_lockstep.py --out "$OUT/lockstep.md"
    exit 0
fi
[ "$stage" = run ] || { echo "unknown stage $stage"; exit 2; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$OUT/gpu.txt" \
    || echo "no nvidia-smi: not a GPU machine" >"$OUT/gpu.txt"
cat "$OUT/gpu.txt"
python3 -c "import torch, skorch; print('torch', torch.__version__, 'skorch', skorch.__version__, 'cuda', torch.cuda.is_available())"

set +e
python3 -m projkd reproduce --dataset "$DATASET" --data-root "$DATA" \
    --pair "$PAIR" --variants alone,kd,fd0,fd1,fd3,kd_lp \
    --epochs "$EPOCHS" --seeds 1 --out "$RUNS" --time-budget "$BUDGET" \
    ${EXTRA:-} 2>&1 | tee "$OUT/reproduce.log"
status=${PIPESTATUS[0]}
set -e
echo "reproduce exit status $status (0: complete, 3: stopped on the budget)"

name=${DATASET}_repro_e${EPOCHS}
cp "$RUNS/results.json" "$OUT/$name.json"
cp "$RUNS/results.md" "$OUT/$name.md"
for png in reliability accuracy; do
    [ -f "$RUNS/$png.png" ] && cp "$RUNS/$png.png" "$OUT/${name}_$png.png"
done
if [ -f "$RUNS/teacher/teacher.pt" ]; then
    cp "$RUNS/teacher/teacher.pt" "$OUT/${TEACHER}_e${EPOCHS}.pt"
    python3 - "$RUNS" "$OUT/${TEACHER}_e${EPOCHS}.SOURCE.md" "$EPOCHS" <<'EOF'
import json, sys
from pathlib import Path

runs, target, epochs = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
results = json.loads((runs / "results.json").read_text())
t, s = results["teacher"], results["settings"]
arch = s["pair"].split(":")[0]
Path(target).write_text(
    f"""# {arch} teacher for {s["dataset"]}, {epochs} epochs

- weights: float32 state_dict of projkd.models.get_model("{arch}"),
  load with projkd.teacher.load_teacher(model, path)
- sha256: {t["sha256"]}
- test top-1 {100 * t["test_acc"]:.2f}%, top-5 {100 * t["test_top5"]:.2f}%
  (final epoch; best epoch {100 * t.get("best_test_acc", float("nan")):.2f}%),
  train accuracy {100 * t["train_acc"]:.2f}%
- training images: {s["subset"] or "all"}
- recipe (CIFAR-100): SGD lr 0.05, momentum 0.9, weight decay 5e-4, batch 64, lr x 0.1 at 5/8, 6/8
  and 7/8 of {epochs} epochs, random crop 32 (pad 4, black) + horizontal flip,
  normalised with the CIFAR-100 mean/std; seed {t.get("seed")}; deviations: {results["deviations"] or "none"}
- fast settings: {results["fast_settings"]["applied"] or "none"}
- card: {results["device"]}
- command: projkd reproduce --dataset {s["dataset"]} --pair {s["pair"]} --epochs {epochs}
  (benchmarks/gpu_session.sh)
"""
)
EOF
fi
ls -l "$OUT"
exit "$status"
