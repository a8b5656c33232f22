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
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
echo "hh_table ${profile}: start $(date '+%F %T'), load average ${load_start} ($(getconf _NPROCESSORS_ONLN) cores)"
start=$(date +%s)
if [ "$profile" = mini ]; then
  # two jobs at a time with one thread each: a tiny model keeps two processes busier than two threads of one
  OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $py -m alignlab --multirun experiment=hh_table_mini \
    hydra/launcher=joblib_local method="${methods}" seed="${SEEDS:-0,1,2}" ${EXTRA:-} hydra.sweep.dir="${out}"
else
  $py -m alignlab --multirun experiment=hh_table method="${methods}" seed="${SEEDS:-0}" ${EXTRA:-} \
    hydra.sweep.dir="${out}"
fi
wall=$(( $(date +%s) - start ))
load_end=$(cut -d' ' -f1-3 /proc/loadavg)
printf '{"profile": "%s", "wall_seconds": %d, "load_average_start": "%s", "load_average_end": "%s", "cores": %d}\n' \
  "${profile}" "${wall}" "${load_start}" "${load_end}" "$(getconf _NPROCESSORS_ONLN)" > "${out}/timing.json"
$py experiments/hh_table/table.py "${out}" --profile "${profile}"
echo "hh_table ${profile}: sweep wall time ${wall} s; load average ${load_start} at the start, ${load_end} at the end"
