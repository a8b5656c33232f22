"""Our accuracy / entropy per method next to the TDPO paper's published HH-RLHF numbers (METHODS.md section 6)."""
import sys
from pathlib import Path

from alignlab.sweep.collect import aggregate, collect

# TDPO paper, Table (Pythia-2.8B on Anthropic HH): preference accuracy (%) and response entropy
PUBLISHED = {"tdpo2": (67.33, 4.915), "dpo": (59.43, 3.196), "f-dpo": (54.71, 4.708)}


def table(sweep_dir: Path) -> str:
    summary = aggregate(collect(sweep_dir), by=["method"], metrics=["eval/pref_accuracy", "eval/entropy"])
    lines = ["| method | accuracy % (ours) | entropy (ours) | accuracy % (paper) | entropy (paper) | seeds |",
             "|---|---|---|---|---|---|"]
    for _, row in summary.iterrows():
        paper = PUBLISHED.get(row["method"], (float("nan"), float("nan")))
        lines.append(f"| {row['method']} | {100 * row['eval/pref_accuracy_mean']:.2f} | "
                     f"{row['eval/entropy_mean']:.3f} | {paper[0]:.2f} | {paper[1]:.3f} | {int(row['n_seeds'])} |")
    for method, (acc, ent) in PUBLISHED.items():
        if method not in set(summary["method"]):
            lines.append(f"| {method} | - | - | {acc:.2f} | {ent:.3f} | 0 |")
    return "\n".join(lines)


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "multirun/hh_table")
    text = table(out)
    (out / "hh_table.md").write_text(text + "\n")
    print(text)
