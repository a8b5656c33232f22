"""Sweep analysis: collect a Hydra multirun, Pareto fronts and hypervolumes, plots, a report, a wandb summary.

    python -m alignlab.sweep multirun/2026-11-23/16-25-29          # sweep.csv, sweep_summary.csv, sweep.md, PNG

    from alignlab.sweep import collect, aggregate, report
    df = collect(sweep_dir)            # one row per job (failed and missing jobs included)
    summary = aggregate(df)            # mean / std over seeds per setting
    report(sweep_dir)                  # everything the CLI writes; returns a dict

Modules, each importing only those listed before it: pareto (pure numpy), collect (tables), plots (matplotlib
Agg), wandb_summary (the wandb run), report (files; plots and wandb_summary imported when used), hydra_callback
(the Hydra callback of a multirun, conf/hydra/default.yaml), __main__ (the CLI). Plotting and wandb are imported
only when used.
"""
from alignlab.sweep.collect import aggregate, collect
from alignlab.sweep.pareto import (compare_fronts, default_reference, dominates_beyond_noise, frontier, frontier_line,
                                   hypervolume_2d, non_dominated, non_dominated_beyond_noise)
from alignlab.sweep.report import report

__all__ = ["collect", "aggregate", "non_dominated", "frontier", "frontier_line", "hypervolume_2d",
           "default_reference", "dominates_beyond_noise", "non_dominated_beyond_noise", "compare_fronts", "report"]
