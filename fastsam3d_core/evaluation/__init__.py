"""Evaluation: the paper's click protocol (model.md §4.1) over folders of labelled cases."""

from .protocol import (
    CaseResult,
    CaseSkipped,
    dice_iou,
    evaluate_case,
    label_mask,
    next_click,
    oracle_crop_grid,
    prepare_case,
    run_clicks,
)
from .report import (
    CasePair,
    EvaluationReport,
    evaluate_cases,
    evaluate_folder,
    find_cases,
    write_csv,
    write_plot,
)

__all__ = [
    "CasePair",
    "CaseResult",
    "CaseSkipped",
    "EvaluationReport",
    "dice_iou",
    "evaluate_case",
    "evaluate_cases",
    "evaluate_folder",
    "find_cases",
    "label_mask",
    "next_click",
    "oracle_crop_grid",
    "prepare_case",
    "run_clicks",
    "write_csv",
    "write_plot",
]
