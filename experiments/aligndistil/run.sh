#!/usr/bin/env bash
# The AlignDistil pipeline on the embedded default, compared with DPO:
#   SFT (cached) -> DPO(beta0) and reverse DPO(beta0) teachers (cached stages) -> AlignDistil from the SFT model,
#   for each teacher (adaptive, contrastive, dpo_ref) and mode (off_policy, on_policy).
#   experiments/aligndistil/run.sh [out dir]       SEEDS=0,1,2 by default
# Real models and data by override, e.g. EXTRA="model=pythia-1b data=ultrafeedback trainer=gpu".
set -euo pipefail
out=${1:-multirun/aligndistil}
seeds=${SEEDS:-0,1,2}
common=(eval.reward_every_n_steps=20 trainer.enable_progress_bar=false seed=${seeds} ${EXTRA:-})
python -m alignlab --multirun "${common[@]}" method=dpo hydra.sweep.dir="${out}/dpo"
python -m alignlab --multirun "${common[@]}" method=aligndistil method.teacher=adaptive,contrastive,dpo_ref \
    method.mode=off_policy,on_policy hydra.sweep.dir="${out}/aligndistil"
python -m alignlab.sweep "${out}" --x eval/kl --y eval/reward
