#!/usr/bin/env bash
# AlignDistil vs DPO as reward-vs-KL fronts, each over its own coefficient, and the steps each needs to reach its
# final reward, with verdicts on the paper's two claims (experiments/aligndistil/summarize.py).
#   experiments/aligndistil/run.sh mini [out dir]   # embedded mini-IMDb + tiny model, 3 seeds, 2-core CPU (~15 min)
#   experiments/aligndistil/run.sh full [out dir]   # UltraFeedback + a ~1.5B chat model (GPU + hub)
#   experiments/aligndistil/run.sh [out dir]        # = mini
# mini: experiment=aligndistil_mini (AlignDistil in its regime: weak teachers, r around 10) over method.r=R_GRID
# (5,10,20) and experiment=aligndistil_mini_common method=dpo over method.beta=BETA_GRID (0.05,0.1,0.5); the SFT
# model, the pairs and the two teachers are cached stages shared by every seed (built once, on the first run).
# full: experiment=aligndistil_full over method.r=R_GRID (10,20,40) and DPO over BETA_GRID (0.05,0.1,0.5).
# SEEDS (0,1,2), R_GRID, BETA_GRID change the grid, EXTRA adds Hydra overrides to both sides, PYTHON picks the
# interpreter. Writes <out>/aligndistil/ and <out>/dpo/ (the two multiruns), <out>/timing.json (wall seconds, load
# average), <out>/claims.json, <out>/aligndistil.md, <out>/front.png and <out>/curves.png.
set -euo pipefail
case "${1:-}" in
  mini|full) profile=$1; shift ;;
  *) profile=mini ;;
esac
out=${1:-multirun/aligndistil_${profile}}
py=${PYTHON:-python}
seeds=${SEEDS:-0,1,2}
mkdir -p "${out}"
source "$(dirname "$0")/../timing.sh"
timing_start aligndistil "${profile}"
if [ "$profile" = mini ]; then
  # two jobs at a time with one thread each: a tiny model keeps two processes busier than two threads of one
  export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
  launch=(hydra/launcher=joblib_local)
  r_grid=${R_GRID:-5,10,20}
else
  launch=()
  r_grid=${R_GRID:-10,20,40}
fi
# AlignDistil first: its first jobs build the two teachers (cached stages) while the others wait on the stage lock
$py -m alignlab --multirun "${launch[@]}" experiment=aligndistil_${profile} method.r="${r_grid}" seed="${seeds}" \
  ${EXTRA:-} hydra.sweep.dir="${out}/aligndistil"
$py -m alignlab --multirun "${launch[@]}" experiment=aligndistil_${profile}_common method=dpo \
  method.beta="${BETA_GRID:-0.05,0.1,0.5}" seed="${seeds}" ${EXTRA:-} hydra.sweep.dir="${out}/dpo"
timing_stop "${out}"
$py experiments/aligndistil/summarize.py "${out}" --profile "${profile}"
timing_report
