#!/usr/bin/env bash
# Several recipes of the transform suite at once, under the suite's protocol (256 px, constant lr 2e-4, scored at two lengths).
#   experiments/known_transform/screen.sh RECIPES [run.py options ...]
# RECIPES: one recipe a line, "NAME SEEDS OVERRIDES..." ('#' starts a comment), e.g.
#   pfTpRUe 0,1,2 train.post_filter=9 vae.backend=torch model.generator.anchor=patch_ot_shrunk train.ema_decay=0.999
# KT_STEPS (default 506,1012) are the scored steps, the last one the run's length, in whole epochs of each recipe's
# batch (352 latents a domain: 22 steps an epoch at the default batch 16, 5 at train.batch_size=64, where 1012 steps
# run as 202 epochs); KT_RESUME=1 continues each run's last.pt to that length (the 2x check: the same file with
# KT_STEPS=1012,2024). KT_SCHEDULE=constant (default) is the protocol's constant rate, one run a recipe scored at each
# length; KT_SCHEDULE=product runs the product's (and the preset's) schedule, half of train.epochs constant then decaying,
# so each length is its own run: NAME2x at KT_STEPS and NAME1x of exactly half its epochs, scored at half of every
# KT_STEPS value (the 2x check: summarize.py --twice NAME1x:NAME2x; results/anneal.md). KT_OUT, KT_GPUS,
# KT_TRANSFORMS as in suite.sh. First the data and the closed-form rows (results_<transform>_baselines.json, where
# missing: one process for the shared folders, then one per transform), then every recipe's suite in parallel.
set -euo pipefail
[ -f "${1:-}" ] || { echo "usage: $0 RECIPES [run.py options ...]: RECIPES is a file of lines \"NAME SEEDS OVERRIDES...\" (${1:-none given} is not a file)" >&2; exit 2; }
recipes=$1
shift
here=$(dirname "$0")
out=${KT_OUT:-outputs/known_transform}
steps=${KT_STEPS:-506,1012}
first=${steps%%,*} last=${steps##*,}
[[ $steps =~ ^[0-9]+(,[0-9]+)*$ ]] && (( first > 0 && last >= first )) \
  || { echo "KT_STEPS=$steps: give the scored steps, e.g. 506,1012 (positive, the last the longest)" >&2; exit 2; }
schedule=${KT_SCHEDULE:-constant}
[[ $schedule == constant || $schedule == product ]] \
  || { echo "KT_SCHEDULE=$schedule: constant (the protocol's rate, one run a recipe) or product (the preset's schedule, a run a length)" >&2; exit 2; }
[ "$schedule" = constant ] || (( first >= 2 )) \
  || { echo "KT_SCHEDULE=product halves KT_STEPS=$steps for the 1x runs: give steps of at least 2" >&2; exit 2; }
latents=352  # A-train and B-train each: 44 photos x 4 crops x 2 flips (run.py's split)
lengths() {  # "EPOCHS EVERY CONSTANT" for scored steps FIRST LAST and a recipe's overrides (after the screen's own: the last
             # batch wins, as in Hydra): whole epochs of its batch, a checkpoint at each scored length
  local first=$1 last=$2 bs=16 o
  shift 2
  for o in "$@"; do [[ $o == train.batch_size=* ]] && bs=${o#*=}; done
  local per=$(( latents / bs > 0 ? latents / bs : 1 ))
  local every=$(( (first + per / 2) / per > 0 ? (first + per / 2) / per : 1 ))
  local epochs=$(( (last + per * every / 2) / (per * every) * every ))
  echo "$epochs $every $(( epochs > 100 ? epochs : 100 ))"  # the documented runs' constant lr, whatever the length
}
transforms=(${KT_TRANSFORMS:-grade sepia split_tone soft_focus sharpen dark_edges null})
KT="$here/run.py --out $out --image-size 256 --vae-device cuda --lpips off --no-train --name baselines $*"
mkdir -p "$out/logs"
todo=() pids=()
for t in "${transforms[@]}"; do [ -f "$out/results_${t}_baselines.json" ] || todo+=("$t"); done  # a resume has them
# a share of the cores each: 6 processes of 16 threads on a 16-core host took 413 s each, with 2 threads 16-22 s
threads=$(( $(nproc) / (${#todo[@]} > 1 ? ${#todo[@]} - 1 : 1) )); threads=$(( threads > 0 ? threads : 1 ))
for i in "${!todo[@]}"; do
  OMP_NUM_THREADS=$threads python3 $KT --transform "${todo[$i]}" >"$out/logs/baselines_${todo[$i]}.log" 2>&1 &
  pids+=($!)
  [ "$i" = 0 ] && { wait "$!" || { echo "baselines of ${todo[0]} failed: $out/logs/baselines_${todo[0]}.log" >&2; exit 1; }; }  # A and the test sets, once
done
for i in "${!pids[@]}"; do wait "${pids[$i]}" || { echo "baselines of ${todo[$i]} failed: $out/logs/baselines_${todo[$i]}.log" >&2; exit 1; }; done
TRAIN=(device=cuda train.compile=false train.cuda_graphs=false train.vis_every=0 optim.lr_decay_epochs=100)
[ "${KT_RESUME:-0}" = 1 ] && TRAIN+=(train.resume=true)
halved=$(IFS=,; h=(); for x in $steps; do h+=($(( x / 2 ))); done; echo "${h[*]}")
suite() {  # LABEL SCORED EPOCHS EVERY SCHEDULE-OVERRIDES... : one recipe's suite in the background
  local label=$1 scored=$2 epochs=$3 every=$4
  shift 4
  echo "screen: $label: $epochs epochs, a checkpoint every $every, $schedule rate"
  KT_OUT=$out bash "$here/suite.sh" "$label" "$seeds" --image-size 256 --vae-device cuda --lpips off --eval-steps "$scored" \
    "${args[@]}" "${TRAIN[@]}" train.epochs=$epochs train.ckpt_every=$every "$@" $rest >"$out/logs/suite_$label.log" 2>&1 &
  pids+=($!)
}
args=("$@") pids=() twice=() recipes_run=0
while read -r name seeds rest || [ -n "${name:-}" ]; do  # the last line may lack its newline
  [ -z "$name" ] || [ "${name:0:1}" = "#" ] && continue
  recipes_run=$((recipes_run + 1))
  read -r epochs every constant <<<"$(lengths "$first" "$last" "$@" $rest)"
  if [ "$schedule" = constant ]; then
    suite "$name" "$steps" "$epochs" "$every" optim.lr_constant_epochs=$constant  # past the run's end: the rate stays constant
  else  # each length its own run, the 1x one exactly half the 2x one's epochs, each decaying over its own second half
    none=(optim.lr_constant_epochs=null optim.lr_decay_epochs=null)
    suite "${name}1x" "$halved" $(( epochs / 2 )) $(( every / 2 > 0 ? every / 2 : 1 )) "${none[@]}"
    suite "${name}2x" "$steps" "$epochs" "$every" "${none[@]}"
    twice+=("--twice ${name}1x:${name}2x")
  fi
done <"$recipes"
fail=0
for p in "${pids[@]}"; do wait "$p" || fail=$((fail + 1)); done
cat "$out"/logs/suite_*.log 2>/dev/null || true
echo "screen: $recipes_run recipes, ${#pids[@]} suites, $fail with failed runs; summarize: python $here/summarize.py ${twice[*]:+${twice[*]} }$out/results_*.json"
