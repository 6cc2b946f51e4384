"""The options of ``fastsam3d finetune`` and ``fastsam3d distill``, declared once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

DataArgument = Annotated[
    Path,
    typer.Argument(
        metavar="DATA",
        help="An nnU-Net/MSD folder (imagesTr/, labelsTr/, dataset.json) or a text file of "
        "IMAGE LABEL lines.",
    ),
]
StepsOption = Annotated[int, typer.Option(min=0, metavar="N", help="Optimizer steps.")]
BatchOption = Annotated[
    int, typer.Option(min=1, metavar="N", help="Crops per step, across all torchrun processes.")
]
AccumulationOption = Annotated[
    int, typer.Option(min=1, metavar="N", help="Micro-batches per process and step.")
]
DeviceOption = Annotated[str, typer.Option(metavar="DEVICE", help="auto, cpu, cuda or mps.")]
SeedOption = Annotated[int, typer.Option(metavar="N", help="Seeds crop order and clicks.")]
CheckpointEveryOption = Annotated[
    int,
    typer.Option(min=1, metavar="N", help="Steps between training checkpoints (for resuming)."),
]
OutputAdapter = Annotated[
    Path, typer.Option("-o", "--output", metavar="ADAPTER.pt", help="Adapter file to write.")
]
ModelOption = Annotated[str, typer.Option(metavar="NAME", help="fastsam3d or sam-med3d-turbo.")]
WeightsOption = Annotated[
    Optional[Path],
    typer.Option(metavar="FILE", help="The base checkpoint (default: the released one)."),
]
LabelOption = Annotated[
    Optional[str],
    typer.Option(
        metavar="V",
        help="The structure: a label value, or a name from dataset.json or the .seg.nrrd "
        "files (default: every non-zero voxel).",
    ),
]
EpochsOption = Annotated[
    Optional[int],
    typer.Option(min=1, metavar="N", help="Passes over the training cases, instead of --steps."),
]
LearningRateOption = Annotated[
    float, typer.Option("--lr", metavar="LR", help="Adam's learning rate.")
]
WarmupOption = Annotated[
    int, typer.Option(min=0, metavar="N", help="Steps over which the learning rate grows to --lr.")
]
ScheduleOption = Annotated[
    str,
    typer.Option(
        metavar="constant|cosine",
        help="The learning rate after the warm-up: constant, or cosine (down to 0 at the last "
        "step, so the last states settle).",
    ),
]
ClipNormOption = Annotated[
    Optional[float],
    typer.Option(min=0.0, metavar="X", help="Clip the gradients' global L2 norm to X (0: not)."),
]
ClicksOption = Annotated[
    int, typer.Option(min=1, metavar="N", help="Simulated clicks per crop and step.")
]
PromptsOption = Annotated[
    str,
    typer.Option(
        metavar="point|box",
        help="What each crop starts from: clicks (point), or the structure's box (box: the "
        "box corners' embeddings are learned too, so the adapted model takes boxes).",
    ),
]
ValidationOption = Annotated[
    float,
    typer.Option(
        min=0.0,
        max=1.0,
        metavar="FRACTION",
        help="Cases held out for validation (0, or one case: the training cases).",
    ),
]
ValidateEveryOption = Annotated[
    int, typer.Option(min=1, metavar="N", help="Steps between evaluations of the held-out cases.")
]
ValidationClicksOption = Annotated[
    int, typer.Option(min=1, max=10, metavar="N", help="Clicks per held-out case there.")
]
KeepLastOption = Annotated[
    bool,
    typer.Option(
        "--keep-last",
        help="Write the last state when no evaluated state beats the start "
        "(default: write nothing and fail).",
    ),
]
OutputStudent = Annotated[
    Path, typer.Option("-o", "--output", metavar="STUDENT.pt", help="Student checkpoint to write.")
]
TeacherOption = Annotated[str, typer.Option(metavar="NAME", help="The teacher model.")]
TeacherWeightsOption = Annotated[
    Optional[Path],
    typer.Option(metavar="FILE", help="The teacher's checkpoint (default: the released one)."),
]
StudentOption = Annotated[str, typer.Option(metavar="NAME", help="The student model.")]
StudentWeightsOption = Annotated[
    Optional[Path],
    typer.Option(
        metavar="FILE", help="Start the student from this checkpoint's encoder (default: random)."
    ),
]
LogitStepsOption = Annotated[
    int, typer.Option(min=0, metavar="N", help="Logit-level steps after the layer-wise ones.")
]
DistillRateOption = Annotated[
    float, typer.Option("--lr", metavar="LR", help="Adam's learning rate (paper: 5e-3).")
]
DistillValidateEveryOption = Annotated[
    int, typer.Option(min=1, metavar="N", help="Steps between evaluations of the logit loss.")
]
TextOption = Annotated[
    bool,
    typer.Option(
        "--text",
        help="Train the text path (segment by name: RefSAM3D's cross-modal reference) and the "
        "decoder's adapters on every named structure of DATA (names from dataset.json or the "
        ".seg.nrrd segments); --label and --prompts do not apply.",
    ),
]
SynonymOption = Annotated[
    Optional[list[str]],
    typer.Option(
        "--synonym",
        metavar="NAME=SYNONYM",
        help="With --text: another name for a structure (repeatable), e.g. liver=hepatic.",
    ),
]
TextModelOption = Annotated[
    Optional[str],
    typer.Option(
        metavar="NAME|FILE",
        help="With --text: the CLIP text model (a registry name or a weights file; default: "
        "the standard one). The adapter file records which.",
    ),
]
