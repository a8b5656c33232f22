#!/usr/bin/env bash
# The IMDb reward-vs-KL frontier: DPO, TDPO1 and TDPO2 over several beta (TDPO2 also over alpha), then the fronts
# and the TDPO paper's claim (TDPO2's front above DPO's and TDPO1's) checked over seeds.
#   experiments/imdb_frontier/run.sh mini [out dir]   # embedded mini-IMDb, this laptop-class CPU
#   experiments/imdb_frontier/run.sh full [out dir]   # gpt2-large + stanfordnlp/imdb + siebert reward, GPU + hub
# BETAS (0.05,0.1,0.5; TDPO2_BETAS for TDPO2, default the same), ALPHAS (TDPO2: 0.1,0.3,0.5,0.7) and SEEDS (0)
# change the grid, EXTRA adds Hydra overrides, PYTHON picks the interpreter. Fronts are only comparable where their
# KL ranges overlap: on the miniature TDPO2 (alpha 0.5) ends at KL 4-5 for beta 0.1-0.5, DPO at 10-21, and DPO's KL
# stops falling at about 9.5 (beta 0.5 and 2 alike, one epoch). Writes <out>/sweep.md, the front plot,
# <out>/claims.json and <out>/timing.json.
set -euo pipefail
profile=${1:-mini}
out=${2:-multirun/imdb_frontier_${profile}}
py=${PYTHON:-python}
betas=${BETAS:-0.05,0.1,0.5}
common=(experiment=imdb_frontier_${profile} seed=${SEEDS:-0} ${EXTRA:-})
if [ "$profile" = mini ]; then
  # two jobs at a time with one thread each: a tiny model keeps two processes busier than two threads of one
  export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
  common+=(hydra/launcher=joblib_local)
fi
source "$(dirname "$0")/../timing.sh"
timing_start imdb_frontier "${profile}"
$py -m alignlab --multirun "${common[@]}" method=dpo,tdpo1 method.beta="${betas}" hydra.sweep.dir="${out}/dpo_tdpo1"
$py -m alignlab --multirun "${common[@]}" method=tdpo2 method.beta="${TDPO2_BETAS:-${betas}}" \
  method.alpha=${ALPHAS:-0.1,0.3,0.5,0.7} hydra.sweep.dir="${out}/tdpo2"
timing_stop "${out}"
# one table and one front over both multiruns: rows keyed by method, beta and alpha
$py -m alignlab.sweep "${out}" --x eval/kl --y eval/reward
$py experiments/imdb_frontier/claims.py "${out}" --profile "${profile}"
timing_report
