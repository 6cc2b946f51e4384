"""``fastsam3d evaluate``: the paper's click protocol over a folder of labelled cases."""

# No `from __future__ import annotations`: Typer on Python 3.9 reads a command's annotations
# unevaluated, as strings, and loses their typer.Option/Argument settings.

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from .prompt_options import TextModelOption
from .runtime import AdapterOption, PrecisionOption

if TYPE_CHECKING:
    from ..evaluation import CasePair, CaseResult, EvaluationReport
    from ..evaluation.report import PredictorFactory

ORACLE = "oracle"
# The paper seeds numpy and torch with 2023 (model.md §4.1).
PAPER_SEED = 2023


ImagesArgument = Annotated[
    Path,
    typer.Argument(
        metavar="IMAGES",
        help="Folder of images (e.g. imagesTr), or a dataset folder holding imagesTr and labelsTr.",
    ),
]
OutputOption = Annotated[
    Path,
    typer.Option("--output", "-o", metavar="FILE.csv", help="CSV file, one row per case."),
]
LabelsOption = Annotated[
    Optional[Path],
    typer.Option(
        metavar="FOLDER", help="Folder of labels named like the images; default: labelsTr beside."
    ),
]
ModelOption = Annotated[
    str,
    typer.Option(metavar="NAME", help="fastsam3d, sam-med3d-turbo, or oracle (the ground truth)."),
]
WeightsOption = Annotated[
    Optional[Path],
    typer.Option(metavar="FILE", help="Local checkpoint; default: the cached download."),
]
ClicksOption = Annotated[int, typer.Option(min=1, metavar="N", help="Clicks per case.")]
AccumulateOption = Annotated[
    bool,
    typer.Option(
        "--accumulate/--new-click-only",
        help="Send every click so far to the decoder (newer SAM-Med3D), or only the new one "
        "with the previous mask (the paper).",
    ),
]
LabelOption = Annotated[
    Optional[int],
    typer.Option(metavar="VALUE", help="Label value of the object; default: any non-zero."),
]
DeviceOption = Annotated[
    str, typer.Option(metavar="DEVICE", help="auto, cpu, cuda, cuda:1 or mps.")
]
SeedOption = Annotated[int, typer.Option(min=0, metavar="N", help="Seed of the click sampler.")]
PlotOption = Annotated[
    Optional[Path],
    typer.Option(metavar="FILE.png", help="PNG plot of mean Dice against clicks."),
]
FirstPromptOption = Annotated[
    str,
    typer.Option(
        metavar="point|box|scribble|lasso|text",
        help="The first interaction of each case: the paper's click (point), a drawing "
        "simulated from the ground truth (its box with a jitter of up to 3 mm a face, a "
        "scribble along its core, its outline on its largest slice), or the --label's name in "
        "dataset.json as a text prompt (needs --adapter with a text path), then the paper's "
        "clicks.",
    ),
]


def evaluate(
    images: ImagesArgument,
    output: OutputOption,
    labels: LabelsOption = None,
    model: ModelOption = "fastsam3d",
    weights: WeightsOption = None,
    adapter: AdapterOption = None,
    precision: PrecisionOption = "float32",
    clicks: ClicksOption = 10,
    accumulate: AccumulateOption = False,
    label: LabelOption = None,
    device: DeviceOption = "auto",
    seed: SeedOption = PAPER_SEED,
    plot: PlotOption = None,
    first_prompt: FirstPromptOption = "point",
    text_model: TextModelOption = None,
) -> None:
    """Evaluate a model with FastSAM3D's click protocol: Dice after 1, 3, 5 and 10 clicks.

    Each case is cropped around its ground truth (128³ at 1.5 mm), the encoder runs once, and
    each click goes to the largest error region (clicks 1-2) or a random error voxel (later).
    With --first-prompt box, scribble or lasso, the first interaction is that drawing, through a
    session on the image as a user's would be, and the clicks follow it.
    """
    from ..evaluation import evaluate_cases, write_csv, write_plot
    from ..io import check_output_path
    from ..io._atomic import same_file

    cases = _find_cases(images, labels, model, first_prompt)
    text, vocabulary = _text_first(images, first_prompt, label, model, adapter, text_model)
    inputs = [path for case in cases for path in (case.image, case.label)] + [weights, adapter]
    check_output_path(output, inputs)
    if plot is not None:
        if same_file(plot, output):
            raise ValueError(f"{plot}: -o and --plot name one file; give the plot another name")
        check_output_path(plot, inputs)
    factory = _predictor_factory(model, weights, device, label, adapter, precision, text)
    typer.echo(
        f"evaluating {len(cases)} case(s) with {model}: {clicks} clicks, "
        f"{_mode(first_prompt, accumulate)}"
    )
    report = evaluate_cases(
        cases,
        factory,
        clicks=clicks,
        accumulate=accumulate,
        label_value=label,
        seed=seed,
        progress=_print_progress,
        first_prompt=first_prompt,
        text=text,
        vocabulary=vocabulary,
    )
    write_csv(report, output)
    typer.echo(f"wrote {output}")
    first = f"the text {text!r}" if text else f"a {first_prompt}"
    title = f"{model}" + ("" if first_prompt == "point" else f", {first} first")
    if plot is not None and write_plot(report, plot, title=f"{title}: mean Dice against clicks"):
        typer.echo(f"wrote {plot}")
    _print_summary(report)
    if not report.evaluated:
        typer.echo("error: no case could be evaluated", err=True)
        raise typer.Exit(1)


def _find_cases(
    images: Path, labels: Optional[Path], model: str, first_prompt: str = "point"
) -> "list[CasePair]":
    """The case pairs, after checking the model name and the first prompt (all before any slow
    work)."""
    from ..evaluation import FIRST_PROMPTS, find_cases
    from ..models import MODEL_REGISTRY
    from .runtime import check_model_name

    check_model_name(model, sorted(MODEL_REGISTRY) + [ORACLE])
    if first_prompt not in FIRST_PROMPTS:
        raise typer.BadParameter(
            f"{first_prompt!r}: choose from {', '.join(FIRST_PROMPTS)}",
            param_hint="--first-prompt",
        )
    return find_cases(images, labels)


def _text_first(
    images: Path,
    first_prompt: str,
    label: Optional[int],
    model: str,
    adapter: Optional[Path],
    text_model: Optional[str],
) -> "tuple[Optional[str], Any]":
    """With ``--first-prompt text``: the ``--label``'s name in the dataset's ``dataset.json``
    (as ``finetune --text`` names it), and the names the model knows (the adapter's bank; the
    oracle needs none), the name looked up in them; (None, None) otherwise. One line for what
    is missing, before any case is read."""
    if first_prompt != "text":
        if text_model is not None:
            raise typer.BadParameter("is for --first-prompt text", param_hint="--text-model")
        return None, None
    if label is None:
        raise typer.BadParameter(
            "--first-prompt text needs --label VALUE: the structure whose name in dataset.json "
            "is the text",
            param_hint="--label",
        )
    from ..training.data import label_names

    folder = images if (images / "dataset.json").is_file() else images.parent
    text = next((n for n, v in label_names(folder).items() if v == label), None)
    if text is None:
        raise ValueError(f"--first-prompt text takes label {label}'s name from "
                         f"{folder / 'dataset.json'}, which does not name it")  # fmt: skip
    if model == ORACLE:
        return text, None
    if adapter is None:
        raise typer.BadParameter("segmenting by name needs a model with a text path: give "
                                 "--adapter FILE, an adapter file from 'fastsam3d finetune DATA "
                                 "--text'", param_hint="--first-prompt")  # fmt: skip
    from ..session.text_prompt import TextVocabulary

    vocabulary = TextVocabulary.from_adapter(adapter, text_model)
    vocabulary.embedding(text)  # not known: one line now, not one per case
    return text, vocabulary


def _mode(first_prompt: str, accumulate: bool) -> str:
    """How each case runs, in words."""
    if first_prompt == "text":
        return "the label's name (text) first over the whole image, then clicks through a session"
    if first_prompt != "point":
        # A session decodes all of a crop's clicks, so --accumulate does not apply.
        return f"a simulated {first_prompt} first, then clicks through a session"
    return "all clicks" if accumulate else "new click + previous mask"


def _predictor_factory(
    model: str,
    weights: Optional[Path],
    device: str,
    label: Optional[int],
    adapter: Optional[Path] = None,
    precision: str = "float32",
    text: Optional[str] = None,
) -> "PredictorFactory":
    """The ground truth for ``oracle`` (which knows the structure by ``text``, where given);
    else one loaded model shared by every case."""
    from ..session import ModelPredictor, OraclePredictor

    if model == ORACLE:
        if weights is not None:
            typer.echo("note: --weights is ignored with --model oracle")
        if text is not None and label is not None:
            from ..session.text_oracle import OracleTextPredictor

            return lambda label_volume: OracleTextPredictor(label_volume, {text: label})
        return lambda label_volume: OraclePredictor(label_volume, label_value=label)
    from .runtime import load_model, resolve_device

    sam = load_model(model, weights, resolve_device(device), adapter, precision)
    predictor = ModelPredictor(sam)
    return lambda _label_volume: predictor


def _print_progress(done: int, total: int, result: "CaseResult") -> None:
    if result.ok:
        last = len(result.dice)
        scores = ", ".join(f"{k}: {result.dice[k - 1]:.4f}" for k in sorted({1, last}))
        note = f", no error left after {result.converged_after}" if result.converged_after else ""
        typer.echo(f"[{done}/{total}] {result.case}: Dice {scores}{note} ({result.seconds:.1f} s)")
    else:
        typer.echo(f"[{done}/{total}] {result.case}: skipped, {result.reason}")


def _print_summary(report: "EvaluationReport") -> None:
    typer.echo(f"\n{len(report.evaluated)} case(s) evaluated, {len(report.skipped)} skipped")
    if report.first_prompt == "text":
        typer.echo("click 1 is the text prompt")
    elif report.first_prompt != "point":
        typer.echo(f"click 1 is the simulated {report.first_prompt}")
    typer.echo(f"{'clicks':>6}  {'mean Dice':>9}")
    for clicks, dice in report.mean_dice().items():
        typer.echo(f"{clicks:>6}  {dice:>9.4f}")
    best = report.mean_best_dice()
    typer.echo(f"mean of each case's best Dice (the paper's 'Mean Dice'): {best:.4f}")
