#!/usr/bin/env bash
# The transform suite on one GPU (or several): every transform x seed of one recipe as parallel processes.
#   experiments/known_transform/suite.sh NAME SEEDS [run.py options and recipe overrides ...]
#   experiments/known_transform/suite.sh ot3_swd3 0,1,2 --eval-steps 990,1980 model.generator.anchor=patch_ot train.lambda_swd=10
# Writes $KT_OUT (default outputs/known_transform)/results_<transform>_<NAME>_s<seed>.json; summarize.py makes the table.
# KT_GPUS=0,1 deals the processes out over those GPUs in turn (CUDA_VISIBLE_DEVICES); default: as the environment has it.
# Twice the steps of finished runs: the same command with train.epochs doubled and train.resume=true continues each.
set -euo pipefail
name=$1 seeds=$2
shift 2
here=$(dirname "$0")
out=${KT_OUT:-outputs/known_transform}
transforms=${KT_TRANSFORMS:-grade sepia split_tone soft_focus sharpen dark_edges null}
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1  # one thread each: many small processes share the cores
mkdir -p "$out/logs"
gpus=(${KT_GPUS:-}); gpus=(${gpus[@]//,/ })
pids=()
for t in $transforms; do
  for s in ${seeds//,/ }; do
    (if [ ${#gpus[@]} -gt 0 ]; then export CUDA_VISIBLE_DEVICES=${gpus[$(( ${#pids[@]} % ${#gpus[@]} ))]}; fi
     exec python3 "$here/run.py" --out "$out" --transform "$t" --name "${name}_s$s" --seeds "$s" "$@") \
      >"$out/logs/${t}_${name}_s$s.log" 2>&1 &
    pids+=($!)
  done
done
fail=0
for p in "${pids[@]}"; do wait "$p" || fail=$((fail + 1)); done
echo "suite $name: ${#pids[@]} runs, $fail failed (logs in $out/logs)"
