#!/usr/bin/env bash
# The TDPO paper's HH-RLHF table (preference accuracy / entropy, plus win rate vs chosen), ours beside the published
# numbers, with a verdict on the paper's claim (TDPO2 above DPO in both).
#   experiments/hh_table/run.sh mini [out dir]   # embedded dialogues (data=mini_hh) + tiny model, 3 seeds, 2-core CPU
#   experiments/hh_table/run.sh full [out dir]   # Pythia-2.8B on Anthropic/hh-rlhf (GPU + hub)
#   experiments/hh_table/run.sh [out dir]        # = full
#   EXTRA="model=pythia-70m data.source.n_train=20000" experiments/hh_table/run.sh full   # a smaller try
# SEEDS (mini: 0,1,2; full: 0) and METHODS (dpo,tdpo1,tdpo2) change the grid, EXTRA adds Hydra overrides, PYTHON
# picks the interpreter. Writes <out>/hh_table.md, <out>/hh_table.json (means, stds, verdict) and <out>/timing.json.
set -euo pipefail
case "${1:-}" in
  mini|full) profile=$1; shift ;;
  *) profile=full ;;
esac
if [ "$profile" = mini ]; then out=${1:-multirun/hh_table_mini}; else out=${1:-multirun/hh_table}; fi
py=${PYTHON:-python}
methods=${METHODS:-dpo,tdpo1,tdpo2}
source "$(dirname "$0")/../timing.sh"
timing_start hh_table "${profile}"
if [ "$profile" = mini ]; then
  # two jobs at a time with one thread each: a tiny model keeps two processes busier than two threads of one
  OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $py -m alignlab --multirun experiment=hh_table_mini \
    hydra/launcher=joblib_local method="${methods}" seed="${SEEDS:-0,1,2}" ${EXTRA:-} hydra.sweep.dir="${out}"
else
  $py -m alignlab --multirun experiment=hh_table method="${methods}" seed="${SEEDS:-0}" ${EXTRA:-} \
    hydra.sweep.dir="${out}"
fi
timing_stop "${out}"
$py experiments/hh_table/table.py "${out}" --profile "${profile}"
timing_report
