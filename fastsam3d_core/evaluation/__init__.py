"""Evaluation: the paper's click protocol (model.md §4.1) over folders of labelled cases, with
the paper's first click or a box, scribble or lasso simulated from the truth."""

from .first_prompts import FIRST_PROMPTS, check_first_prompt, simulated_prompt
from .prompted import evaluate_prompted_case
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
    "FIRST_PROMPTS",
    "CasePair",
    "CaseResult",
    "CaseSkipped",
    "EvaluationReport",
    "check_first_prompt",
    "dice_iou",
    "evaluate_case",
    "evaluate_cases",
    "evaluate_folder",
    "evaluate_prompted_case",
    "find_cases",
    "label_mask",
    "next_click",
    "oracle_crop_grid",
    "prepare_case",
    "run_clicks",
    "simulated_prompt",
    "write_csv",
    "write_plot",
]
