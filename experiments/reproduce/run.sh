#!/usr/bin/env bash
# One reproduction report for the seed papers' headline claims: runs each recipe, then writes <out>/report.md.
#   experiments/reproduce/run.sh mini [out dir]   # the embedded miniatures, 3 seeds, a 2-core CPU (make reproduce)
#   experiments/reproduce/run.sh full [out dir]   # the paper-scale versions: GPU machine(s) with hub access
# A recipe that fails is reported as not run; the others still run. PYTHON picks the interpreter, EXTRA is passed
# to every recipe, RECIPES (imdb_frontier,merge_frontier,aligndistil,hh_table) picks a subset.
set -uo pipefail
profile=${1:-mini}
out=${2:-multirun/reproduce_${profile}}
here=$(cd "$(dirname "$0")/../.." && pwd)
export PYTHON=${PYTHON:-python}
mkdir -p "${out}"
if [ "$profile" = mini ]; then
  # the miniature's grids, sized so that the whole report fits in an hour on 2 cores (measured: 24 min quiet, cold cache) (a larger DPO beta does
  # not reach TDPO2's KL range here: beta 2 ends at KL 9.5 like beta 0.5, see experiments/imdb_frontier/run.sh)
  imdb_env=(SEEDS=0,1,2 BETAS=0.1,0.5 ALPHAS=0.5)
else
  imdb_env=(SEEDS=0,1,2)
fi
echo "reproduce ${profile}: start $(date '+%F %T'), load average $(cut -d' ' -f1-3 /proc/loadavg) ($(getconf _NPROCESSORS_ONLN) cores)"
start=$(date +%s)
status=()
for recipe in $(echo "${RECIPES:-imdb_frontier,merge_frontier,aligndistil,hh_table}" | tr ',' ' '); do
  echo "== ${recipe} ($(date '+%T'))"
  case "$recipe" in
    imdb_frontier) env "${imdb_env[@]}" "${here}/experiments/imdb_frontier/run.sh" "${profile}" "${out}/${recipe}" ;;
    merge_frontier|aligndistil|hh_table) "${here}/experiments/${recipe}/run.sh" "${profile}" "${out}/${recipe}" ;;
    *) echo "unknown recipe ${recipe}"; false ;;
  esac > "${out}/${recipe}.log" 2>&1
  code=$?
  status+=("${recipe}=${code}")
  echo "   exit ${code}, log ${out}/${recipe}.log"
done
wall=$(( $(date +%s) - start ))
echo "reproduce ${profile}: ${wall} s, load average $(cut -d' ' -f1-3 /proc/loadavg) at the end"
$PYTHON "${here}/experiments/reproduce/report.py" "${out}" --profile "${profile}" --wall "${wall}" \
  --status "${status[@]}"
