#!/usr/bin/env bash
# The TDPO paper's HH-RLHF table (accuracy / entropy), ours beside the published numbers.
#   experiments/hh_table/run.sh [out dir]                       # Pythia-2.8B on Anthropic/hh-rlhf (GPU + hub)
#   EXTRA="model=pythia-70m data.source.n_train=20000" experiments/hh_table/run.sh   # a smaller try
set -euo pipefail
out=${1:-multirun/hh_table}
python -m alignlab --multirun experiment=hh_table method=dpo,tdpo1,tdpo2 ${EXTRA:-} hydra.sweep.dir="${out}"
python experiments/hh_table/table.py "${out}"
