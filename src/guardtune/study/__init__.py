"""Comparative studies: a grid of training runs (arms x search x seeds x cells) on matched settings, scored on
the same test rows, summarised with intervals, paired tests against a reference, cost columns and plots.

    study = load_study("configs/study/peft-methods.yaml")
    run_study(study, workers=2)          # resumable; writes results.csv/json, report.md and plots/
"""

from guardtune.study.report import write_report
from guardtune.study.runner import run_study
from guardtune.study.spec import Run, Study, load_study

__all__ = ["Run", "Study", "load_study", "run_study", "write_report"]
