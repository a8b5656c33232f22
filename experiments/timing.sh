# Sourced by the recipes' run.sh: one way to time a sweep and record the load it ran under, since a wall time
# measured on a loaded 2-core machine measures the load (the reproduction report sums these files).
#   source "$(dirname "$0")/../timing.sh"
#   timing_start <recipe> <profile>      # prints the start time and load average
#   ...the sweep...
#   timing_stop <out dir> [json fields]  # writes <out dir>/timing.json; fields: ', "phases": {...}' (raw JSON)
#   timing_report                        # prints the sweep's wall time and both load averages (call it last)
timing_start() {
  timing_recipe=$1
  timing_profile=$2
  timing_cores=$(getconf _NPROCESSORS_ONLN)   # not nproc: it follows OMP_NUM_THREADS
  timing_load_start=$(cut -d' ' -f1-3 /proc/loadavg)
  echo "${timing_recipe} ${timing_profile}: start $(date '+%F %T'), load average ${timing_load_start} (${timing_cores} cores)"
  timing_t0=$(date +%s)
}

timing_stop() {
  local out=$1 fields=${2:-}
  timing_wall=$(( $(date +%s) - timing_t0 ))
  timing_load_end=$(cut -d' ' -f1-3 /proc/loadavg)
  mkdir -p "${out}"
  printf '{"profile": "%s", "wall_seconds": %d, "load_average_start": "%s", "load_average_end": "%s", "cores": %d%s}\n' \
    "${timing_profile}" "${timing_wall}" "${timing_load_start}" "${timing_load_end}" "${timing_cores}" "${fields}" \
    > "${out}/timing.json"
}

timing_report() {
  echo "${timing_recipe} ${timing_profile}: sweep wall time ${timing_wall} s; load average ${timing_load_start} at" \
    "the start, ${timing_load_end} at the end"
}
