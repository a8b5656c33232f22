#!/usr/bin/env bash
# Reward vs capability of merged and online-merged models (Lin et al. EMNLP 2024: model averaging and HMA; Lu et al.
# 2024: OnDARE / OnTIES), with verdicts on both papers' claims.
#   experiments/merge_frontier/run.sh mini [out dir]   # embedded mini-IMDb + tiny model, 3 seeds, 2-core CPU
#   experiments/merge_frontier/run.sh full [out dir]   # OpenLLaMA-3B on Anthropic HH-RLHF (GPU, hub, lm_eval)
#   experiments/merge_frontier/run.sh [out dir]        # = mini
# Per seed: the DPO policy (AdamW, merge=none); model averaging between the SFT model and that policy at each alpha of
# ALPHAS; HMA at the same mean alphas with learned block ratios and with given ones (lower layers averaged most);
# DPO trained with the online merging optimizers (OnDARE, OnTIES). Every model is evaluated with eval=tax.
# SEEDS (mini: 0,1,2; full: 0), ALPHAS (0.25,0.5,0.75), ONDARE / ONTIES (the online mergers' Hydra overrides) and
# EXTRA (more overrides for every run) change the grid; PYTHON picks the interpreter. Writes <out>/timing.json,
# <out>/merge_frontier.md, <out>/merge_frontier.csv, <out>/claims.json and the front plots (summarize.py).
set -euo pipefail
case "${1:-}" in
  mini|full) profile=$1; shift ;;
  *) profile=mini ;;
esac
out=${1:-multirun/merge_frontier_${profile}}
py=${PYTHON:-python}
alphas=${ALPHAS:-0.25,0.5,0.75}
if [ "$profile" = mini ]; then
  seeds=${SEEDS:-0,1,2}
  # two jobs at a time with one thread each (a tiny model keeps two processes busier than two threads of one)
  export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
  launch=(hydra/launcher=joblib_local)
  hma=(merge.lr=0.1)            # the paper's lr 2e-5 leaves the tiny model's block ratios where they start
  # online mergers on the tiny model (README, Tuning: at the released a=1e-7 they change nothing here; OnTIES's
  # rescaled top-p steps at p=0.3 are 3x AdamW's and wipe out the capability)
  ondare=(${ONDARE:-++merge.p=0.3 ++merge.a=1e-3})
  onties=(${ONTIES:-++merge.p=0.9 ++merge.a=1e-3})
  x=tax/capability
else
  seeds=${SEEDS:-0}
  launch=()
  hma=()                        # the paper's lr 2e-5, top 5000 / keep 2000 samples
  hma+=(merge.top=5000 merge.n_keep=2000)
  ondare=(${ONDARE:-})          # the released recipe's p=0.01, a=1e-7 (conf/merge/ondare.yaml, onties.yaml)
  onties=(${ONTIES:-})
  x=tax/lm_eval/race/acc        # reading comprehension, one of the paper's tax benchmarks
fi
mkdir -p "${out}"
abs=$(cd "${out}" && pwd)
common=(experiment=merge_frontier_${profile} "${launch[@]}" seed="${seeds}" ${EXTRA:-})
source "$(dirname "$0")/../timing.sh"
timing_start merge_frontier "${profile}"
phases=()
phase() {  # phase <name> <command...>: run it and remember its wall seconds
  local name=$1 t0
  shift
  t0=$(date +%s)
  "$@"
  phases+=("\"${name}\": $(( $(date +%s) - t0 ))")
}

# 1. the DPO policy per seed (plain AdamW): alpha = 1 of the merges, and the baseline of the online mergers
phase policy $py -m alignlab --multirun "${common[@]}" merge=none hydra.sweep.dir="${out}/policy"
# links <out>/models/aligned_s<seed> (the policy) and pre_s<seed> (its SFT model), for the merges' interpolation
$py - "${out}" <<'EOF'
import json, os, sys
from pathlib import Path
from alignlab.sweep.collect import collect
out = Path(sys.argv[1]).resolve()
(out / "models").mkdir(exist_ok=True)
for row in collect(out / "policy").itertuples():
    if row.status != "ok":
        sys.exit(f"merge_frontier: the policy job {row.job_dir} failed: {row.error}")
    results = json.loads((Path(row.job_dir) / "results.json").read_text())
    for name, target in (("aligned", results["policy_dir"]), ("pre", results["pre_dir"])):
        link = out / "models" / f"{name}_s{row.seed}"
        if link.is_symlink():
            link.unlink()
        os.symlink(Path(target).resolve(), link)
EOF
merge=(mode=merge merge.aligned="${abs}/models/aligned_s\${seed}" merge.pre="${abs}/models/pre_s\${seed}")
# 2. model averaging, 3. HMA with learned block ratios, at the same mean alphas
phase average $py -m alignlab --multirun "${common[@]}" "${merge[@]}" merge=average merge.alpha="${alphas}" \
  hydra.sweep.dir="${out}/average"
phase hma_learned $py -m alignlab --multirun "${common[@]}" "${merge[@]}" merge=hma "${hma[@]}" \
  merge.alpha="${alphas}" hydra.sweep.dir="${out}/hma_learned"
# 4. HMA with given ratios: the lower layers averaged most (Lin et al. find averaging the low-level layers gives the
# best reward-tax trade-off): block 1 (and the embeddings) alpha/2, the other blocks share the rest (mean alpha)
for alpha in ${alphas//,/ }; do
  ratios=$($py -c "a = float('${alpha}'); r = 1.25 * a; print(f'[{a / 2:g},{r:g},{r:g}]')")
  phase "hma_given_${alpha}" $py -m alignlab --multirun "${common[@]}" "${merge[@]}" merge=hma merge.alpha="${alpha}" \
    merge.block_ratios="${ratios}" hydra.sweep.dir="${out}/hma_given/alpha_${alpha}"
done
# 5. DPO with the online merging optimizers
phase ondare $py -m alignlab --multirun "${common[@]}" merge=ondare "${ondare[@]}" hydra.sweep.dir="${out}/ondare"
phase onties $py -m alignlab --multirun "${common[@]}" merge=onties "${onties[@]}" hydra.sweep.dir="${out}/onties"

timing_stop "${out}" ", \"phases\": {$(IFS=,; echo "${phases[*]}")}"
$py experiments/merge_frontier/summarize.py "${out}" --profile "${profile}" --x "${x}"
timing_report
