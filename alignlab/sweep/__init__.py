"""Sweep analysis: collect a Hydra multirun, Pareto fronts and hypervolumes, plots, a report, a wandb summary.

    python -m alignlab.sweep multirun/2026-11-23/16-25-29          # sweep.csv, sweep_summary.csv, sweep.md, PNG

    from alignlab.sweep import collect, aggregate, report
    df = collect(sweep_dir)            # one row per job (failed and missing jobs included)
    summary = aggregate(df)            # mean / std over seeds per setting
    report(sweep_dir)                  # everything the CLI writes; returns a dict

Modules: collect (tables), pareto (pure numpy), plots (matplotlib Agg), report (files), wandb_summary,
callback (Hydra callback). Plotting and wandb are imported only when used.
"""
from alignlab.sweep.collect import aggregate, collect
from alignlab.sweep.pareto import default_reference, frontier, frontier_line, hypervolume_2d, non_dominated


def report(*args, **kwargs):
    """See alignlab.sweep.report.report."""
    from alignlab.sweep.report import report as _report

    return _report(*args, **kwargs)


__all__ = ["collect", "aggregate", "non_dominated", "frontier", "frontier_line", "hypervolume_2d",
           "default_reference", "report"]
