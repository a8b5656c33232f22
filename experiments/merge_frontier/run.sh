#!/usr/bin/env bash
# Reward vs alignment tax of merged models: one DPO policy on the embedded default, then model averaging over
# alpha in {0, 0.2, ..., 1} and HMA (learned block ratios) at the same mean alphas, each evaluated with eval=tax.
#   experiments/merge_frontier/run.sh [out dir]
set -euo pipefail
out=${1:-multirun/merge_frontier}
python -m alignlab hydra.run.dir="${out}/policy" ${EXTRA:-}
aligned="${out}/policy/policy"
pre=$(python -c "import json,sys; print(json.load(open(sys.argv[1]))['pre_dir'])" "${out}/policy/results.json")
common=(mode=merge eval=tax merge.aligned="${aligned}" merge.pre="${pre}" trainer.enable_progress_bar=false)
python -m alignlab --multirun "${common[@]}" merge=average merge.alpha=0,0.2,0.4,0.6,0.8,1.0 \
    hydra.sweep.dir="${out}/average"
# the tiny model needs a larger lr than the paper's 2e-5 for the block ratios to move
python -m alignlab --multirun "${common[@]}" merge=hma merge.lr=0.1 merge.alpha=0.2,0.4,0.6,0.8 \
    hydra.sweep.dir="${out}/hma"
python -m alignlab.sweep "${out}/average" --x tax/ppl_ratio --y eval/reward --by merge --out "${out}/average"
python -m alignlab.sweep "${out}/hma" --x tax/ppl_ratio --y eval/reward --by merge --out "${out}/hma"
python experiments/merge_frontier/summarize.py "${out}"
