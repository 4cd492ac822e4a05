#!/usr/bin/env bash
# The paper's CIFAR-100 comparison on a lent GPU machine (docs/reproduce.rst).
#
# Run from the repository root on the GPU machine, in three back-to-back calls
# of the device tool (the CIFAR-100 parts are too big for one call's carry;
# docs/reproduce.rst lists the three exact calls, timeouts included):
#
#   1. bash benchmarks/gpu_session.sh first   carry .gpu/whl, .gpu/cifar100/train_data.part0.npy.xz
#   2. bash benchmarks/gpu_session.sh stage   carry .gpu/cifar100/train_data.part1.npy.xz
#   3. bash benchmarks/gpu_session.sh run     carry .gpu/whl, .gpu/cifar100/train_data.part2.npy.xz,
#                                                   .gpu/cifar100/test_data.npy.xz, .gpu/cifar100/labels.npz
#
# "first" stages, then measures the card while the data is still arriving:
# benchmarks/bench_gpu.py on wrn_40_2 -> wrn_16_2 at batch 64 (its bf16 peak
# a GEMM measured in the same run), written to $OUT/gpu.md.
# "stage" moves the carried files out of the checkout: the data to $DATA, a
# carried state (.gpu/state) to $STATE; both stay while the machine is warm.
# "run" trains the teacher and the variants (wrn_40_2 -> wrn_16_2, --epochs
# auto by default: planned to end at 90% of BUDGET) under a time budget and writes to $OUT (at most 8 files, each
# under 16 MiB; benchmarks/session_run.py): reproduce.log (the card, the
# versions, the output), the results <dataset>_repro_e<E>.json/.md and two
# plots, the trained teacher's weights <teacher>_e<E>.pt with a SOURCE note,
# and state.tar.xz, what a later session needs to continue (split into
# state.tar.xz.0, .1, ... when it does not fit 16 MiB; the plots are then left
# out). It exits 0 when every run is done, 3 when the budget stopped it.
# If the budget stopped it, "run" again (same warm machine) continues. In a
# later session (a new machine), copy the files that came back (state.tar.xz*
# and the teacher's .pt) into .gpu/state/ and carry that folder with a "stage"
# call that has room (or with "run"): "run" then resumes from $STATE
# (projkd reproduce --resume-from), with the same settings.
# "bench" (a separate call, if device time is left) measures lockstep against
# separate fits (benchmarks/bench_lockstep.py) and writes $OUT/lockstep.md.
#
# Settings (environment): EPOCHS ("auto": planned to the budget, E in the file
# names is then the planned count; or a number), BUDGET seconds (360), DATA
# (/root/cifar100), RUNS (/root/repro_e$EPOCHS), STATE (/root/state),
# RESUME (a state to resume from; default $STATE when it holds one), PAIR
# (wrn_40_2:wrn_16_2), DATASET (cifar100), VARIANTS
# (alone,kd,fd0,fd1,fd3,kd_lp), EXTRA (more reproduce flags, e.g. "--subset
# 5000"), PYTHON (python3), CARRY (.gpu: the carried whl/, cifar100/, state/),
# SITE (/tmp/site: where the skorch wheel is installed).
set -euo pipefail

stage=${1:?usage: gpu_session.sh first|stage|run|bench}
EPOCHS=${EPOCHS:-auto}
PAIR=${PAIR:-wrn_40_2:wrn_16_2}
DATASET=${DATASET:-cifar100}
VARIANTS=${VARIANTS:-alone,kd,fd0,fd1,fd3,kd_lp}
BUDGET=${BUDGET:-360}
DATA=${DATA:-/root/cifar100}
RUNS=${RUNS:-/root/repro_e${EPOCHS}}
STATE=${STATE:-/root/state}
OUT=${OUT:-/tmp/projkd-out}
PYTHON=${PYTHON:-python3}
CARRY=${CARRY:-.gpu}
SITE=${SITE:-/tmp/site}
here=$(dirname "$0")
mkdir -p "$DATA" "$OUT"

# skorch is not on the GPU machine: install the carried wheel once
if [ -d "$CARRY/whl" ] && ! [ -d "$SITE/skorch" ]; then
    "$PYTHON" -m pip install -q --no-index --no-deps --target "$SITE" "$CARRY"/whl/*.whl
fi
export PYTHONPATH=$SITE:.${PYTHONPATH:+:$PYTHONPATH}

if [ -d "$CARRY/cifar100" ]; then
    find "$CARRY/cifar100" -maxdepth 1 -type f -exec mv -f {} "$DATA/" \;
fi
echo "data in $DATA:"; ls -l "$DATA"
if [ -d "$CARRY/state" ]; then  # an earlier session's state.tar.xz* and teacher .pt
    mkdir -p "$STATE"
    find "$CARRY/state" -maxdepth 1 -type f -exec mv -f {} "$STATE/" \;
    echo "state in $STATE:"; ls -l "$STATE"
fi

if [ "$stage" = stage ]; then
    exit 0
fi
if [ "$stage" = first ]; then
    "$PYTHON" "$here/bench_gpu.py" --gpu --pairs wrn_40_2-wrn_16_2 --batch-sizes 64 \
        --out "$OUT/gpu.md"
    exit 0
fi
if [ "$stage" = bench ]; then
    "$PYTHON" "$here/bench_lockstep.py" --out "$OUT/lockstep.md"
    exit 0
fi
[ "$stage" = run ] || { echo "unknown stage $stage"; exit 2; }

if [ -z "${RESUME:-}" ] && compgen -G "$STATE/state.tar.xz*" >/dev/null; then
    RESUME=$STATE
fi
resume=()
[ -n "${RESUME:-}" ] && resume=(--resume-from "$RESUME")

log=$OUT/reproduce.log
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$log" 2>&1 \
    || echo "no nvidia-smi: not a GPU machine" >"$log"
cat "$log"

set +e
# shellcheck disable=SC2086  # EXTRA is a list of flags
"$PYTHON" -u "$here/session_run.py" "$OUT" -- --dataset "$DATASET" --data-root "$DATA" \
    --pair "$PAIR" --variants "$VARIANTS" \
    --epochs "$EPOCHS" --seeds 1 --out "$RUNS" --time-budget "$BUDGET" \
    "${resume[@]}" ${EXTRA:-} 2>&1 | tee -a "$log"
status=${PIPESTATUS[0]}
set -e
ls -l "$OUT"
exit "$status"
