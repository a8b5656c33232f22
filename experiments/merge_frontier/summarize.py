"""One CSV of the merge frontier: merge kind, alpha, HMA ratios, reward, KL and tax metrics per job."""
import sys
from pathlib import Path

from alignlab.sweep.collect import collect

COLUMNS = ["merge", "merge.alpha", "merge/ratio_1", "merge/ratio_2", "merge/ratio_3", "eval/reward", "eval/kl",
           "tax/ppl_ratio", "tax/probe_accuracy", "tax/probe_drop", "status"]

out = Path(sys.argv[1] if len(sys.argv) > 1 else "multirun/merge_frontier")
table = collect(out)
table["merge"] = table["merge"].fillna("none (the aligned policy)") if "merge" in table else "none"
table = table[[c for c in COLUMNS if c in table.columns]].sort_values(["merge", "merge.alpha"])
table.to_csv(out / "merge_frontier.csv", index=False)
print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
print(f"\nwritten: {out / 'merge_frontier.csv'}")
