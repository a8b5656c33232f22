#!/usr/bin/env bash
# The IMDb reward-vs-KL frontier: DPO, TDPO1 and TDPO2 (alpha 0.1..0.7) over several beta, then the front.
#   experiments/imdb_frontier/run.sh mini [out dir]   # embedded mini-IMDb, this laptop-class CPU
#   experiments/imdb_frontier/run.sh full [out dir]   # gpt2-large + stanfordnlp/imdb + siebert reward, GPU + hub
# Extra Hydra overrides go in $EXTRA (e.g. EXTRA="seed=0,1,2").
set -euo pipefail
profile=${1:-mini}
out=${2:-multirun/imdb_frontier_${profile}}
betas=${BETAS:-0.05,0.1,0.5}
common=(experiment=imdb_frontier_${profile} method.beta=${betas} ${EXTRA:-})
python -m alignlab --multirun "${common[@]}" method=dpo,tdpo1 hydra.sweep.dir="${out}/dpo_tdpo1"
python -m alignlab --multirun "${common[@]}" method=tdpo2 method.alpha=0.1,0.3,0.5,0.7 hydra.sweep.dir="${out}/tdpo2"
# one table and one front over both multiruns: rows keyed by method, beta and alpha
python -m alignlab.sweep "${out}" --x eval/kl --y eval/reward
