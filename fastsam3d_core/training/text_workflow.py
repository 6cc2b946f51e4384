"""``fastsam3d finetune DATA --text``: train the text path (RefSAM3D's cross-modal reference) and
the decoder's adapters on every named structure of DATA; base model and text encoder frozen.

The same loop, validation and best-state logic as click fine-tuning (:mod:`.loop`,
:mod:`.validation`), torchrun included. The validation score is the mean over the held-out
cases' structures of the whole-volume Dice from the text alone. Each name's text embedding is
computed once (with its synonyms'), and each tile's encoder outputs once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..io import check_output_path
from ..models.adapter import AdapterConfig, attach_adapters
from ..models.build import resolve_device
from ..models.text_reference import attach_text_reference
from ..weights.recipe import ModelRecipe
from ..weights.text_bank import TextBank, build_bank
from .data import find_cases
from .finetune import LOSS, NotImprovedError, finetune_loop_config
from .loop import LoopConfig, Ranks, case_of, process_group, remove_state, train, write_metrics
from .observer import TrainingObserver
from .settings import FinetuneSettings
from .text_data import TextCase, parse_synonyms, text_cases
from .text_objective import VOCABULARY_WEIGHT, TextObjective, text_dice, tile_features
from .validation import BestState, Evaluation, ValidationPlan


@dataclass(frozen=True)
class TextOutcome:
    """A text run's history (what :class:`~.workflows.FinetuneResult` carries as its outcome)."""

    history: list


def run_text_finetune(settings: FinetuneSettings, observer=None, load_model=None, encoder=None):
    """Train and write a text adapter file (see the module's description).

    Args:
        settings: ``settings.text`` set; ``synonyms`` ("name=synonym" pairs) and ``text_model``
            (a registry name, file or ``seeded:<n>``; None: the default CLIP text model).
        observer, load_model: as :func:`~.workflows.run_finetune`.
        encoder: a text encoder to use instead of loading ``text_model`` (tests).

    Returns:
        (history, summary, files written): summary and files only on rank 0.

    Raises:
        NotImprovedError: no evaluated state beat the untrained text path (and not
            ``keep_last``); DatasetError, ValueError, OSError as :func:`run_finetune`.
    """
    observer = observer or TrainingObserver()
    files = find_cases(settings.data)
    synonyms = parse_synonyms(settings.synonyms)
    data_files = [path for case in files for path in (case.image, case.label)]
    check_output_path(settings.output, inputs=(settings.weights, settings.data, *data_files))
    with process_group(resolve_device(settings.device)) as ranks:
        say = observer.message if ranks.main else (lambda *_: None)
        recipe = ModelRecipe(settings.model, settings.weights, device=ranks.device).with_weights()
        say(recipe.loading_line())
        loaded = (load_model or (lambda r: r.load()))(recipe)
        model = loaded.model
        say(f"preparing {len(files)} case(s) from {settings.data} (every named structure) ...")
        cases = text_cases(files, settings.data, say)
        bank = _bank(cases, synonyms, settings.text_model, encoder, say)
        training, held_out = _split(cases, settings.validation, settings.seed)
        torch.manual_seed(settings.seed)
        attach_adapters(model, AdapterConfig(encoder=False))
        attach_text_reference(model)
        # Texts centred on the training names' mean embedding (not the synonyms': each
        # structure counts once); the adapter file keeps it for any text at use time.
        names = [name for name in bank.embeddings if name not in bank.synonyms]
        model.text_reference.set_text_centre(torch.stack([bank.embeddings[n] for n in names]))
        outcome = _train(model, training, held_out, bank, settings, ranks, observer, loaded)
        if not ranks.main:
            return outcome[0], None, []
        return _write(model, bank, outcome, settings, ranks, observer, loaded, held_out)


def _bank(cases, synonyms, text_model, encoder, say) -> TextBank:
    """The names' (and synonyms') embeddings, from the frozen text encoder, once."""
    names = sorted({name for case in cases for name in case.structures})
    if encoder is None:
        from ..text import DEFAULT_TEXT_MODEL, load_text_encoder

        say(f"text model: {text_model or DEFAULT_TEXT_MODEL}")
        encoder = load_text_encoder(text_model or DEFAULT_TEXT_MODEL)
    say(f"structures: {', '.join(names)}" + (f"; synonyms: {synonyms}" if synonyms else ""))
    return build_bank(names, synonyms, encoder)


def _split(cases: list, fraction: float, seed: int) -> tuple[list, list]:
    """As click fine-tuning splits (workflows.split_cases): one case is both."""
    if len(cases) == 1 or fraction == 0:
        return cases, cases
    held = min(len(cases) - 1, max(1, round(fraction * len(cases))))
    order = np.random.default_rng(seed).permutation(len(cases))
    return [cases[i] for i in order[held:]], [cases[i] for i in order[:held]]


def _samples(cases: list[TextCase]) -> list[tuple[int, int, str]]:
    return [
        (index, tile, name)
        for index, case in enumerate(cases)
        for name in sorted(case.structures)
        for tile in range(len(case.tiles))
    ]


def _train(model, training, held_out, bank, settings, ranks: Ranks, observer, loaded):
    """Run the loop with validation; returns (history, best state, Dice before, Dice after)."""
    features = tile_features(model, training)
    held_features = features if held_out is training else tile_features(model, held_out)
    texts = {name: bank.embeddings[name] for name in bank.embeddings}
    spoken = {name: [name] + sorted(s for s, n in bank.synonyms.items() if n == name)
              for name in bank.embeddings if name not in bank.synonyms}  # fmt: skip
    samples = _samples(training)
    vocabulary = {name: texts[name] for name in spoken}
    objective = TextObjective(model, training, features, max(0, settings.clicks - 1),
                              vocabulary=vocabulary,
                              vocabulary_weight=VOCABULARY_WEIGHT)  # fmt: skip
    config = _config(settings, training, loaded.checkpoint_sha256, len(samples))

    def evaluate() -> Evaluation:
        scores = text_dice(model, held_out, held_features, texts)
        details = {f"dice_{name.replace(' ', '_')}": value for name, value in scores.items()}
        return Evaluation(float(np.mean(list(scores.values()))), False, details)

    def compute_loss(wrapped, numbers: list[int], step: int) -> torch.Tensor:
        chosen = [samples[case_of(n, len(samples), config.seed)] for n in numbers]
        # A name or one of its synonyms, drawn from the sample's own seed.
        words = [
            spoken[name][np.random.default_rng([config.seed, n, 7]).integers(len(spoken[name]))]
            for (_, _, name), n in zip(chosen, numbers)
        ]
        text = torch.stack([texts[w] for w in words]).to(ranks.device)
        return wrapped(chosen, text, [[config.seed, n] for n in numbers])

    before = text_dice(model, held_out, held_features, texts)
    best = BestState(ValidationPlan(evaluate, every=settings.validate_every))
    model.train()
    try:
        history = train(objective, compute_loss, config, ranks, validation=best, observer=observer)
    finally:
        model.eval()
    best.restore_best()
    usable = best.improved or settings.keep_last
    after = text_dice(model, held_out, held_features, texts) if usable else {}
    return history, best, before, after


def _config(settings: FinetuneSettings, training, base_sha256: str, samples: int) -> LoopConfig:
    return finetune_loop_config(
        settings,
        samples,
        {"command": "finetune --text", "model": settings.model, "base_sha256": base_sha256,
             "cases": [case.name for case in training], "clicks": settings.clicks,
             "loss": LOSS, "synonyms": sorted(settings.synonyms),
             "text_model": settings.text_model, "validate_every": settings.validate_every},
    )  # fmt: skip


def _write(model, bank, outcome, settings, ranks, observer, loaded, held_out):
    from ..weights.adapter_file import save_adapter

    history, best, before, after = outcome
    output: Path = settings.output
    observer.message(f"text Dice before (untrained text path): {_dice(before)}")
    if not (best.improved or settings.keep_last):
        write_metrics(history, output, "finetune --text")
        raise NotImprovedError(
            f"{output}: not written: no trained state beat the untrained text path on the "
            f"validation case(s) (mean text Dice: start {best.start.score:.3f}, best "
            f"{(best.best or best.start).score:.3f}); try more steps or cases, another --lr, or "
            "--keep-last to write the last state anyway"
        )
    observer.message(f"kept the state of step {best.best_step} of {len(history)}; "
                     f"text Dice after: {_dice(after)}")  # fmt: skip
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    summary = {
        "text": True, "names": sorted(n for n in bank.embeddings if n not in bank.synonyms),
        "synonyms": bank.synonyms, "text_encoder": bank.identity,
        "cases": [c.name for c in held_out], "steps": len(history), "best_step": best.best_step,
        "validation_score_base": best.start.score,
        "validation_score_best": (best.best or best.start).score,
        "text_dice_before": before, "text_dice_after": after,
        "trainable_parameters": trainable, "learning_rate": settings.learning_rate,
        "schedule": settings.schedule, "clicks": settings.clicks, "processes": ranks.world,
        "final_loss": history[-1]["loss"] if history else None,
    }  # fmt: skip
    save_adapter(model, output, checkpoint_sha256=loaded.checkpoint_sha256, summary=summary,
                 text_bank=bank)  # fmt: skip
    remove_state(_config(settings, [], "", 1), ranks)
    written = write_metrics(history, output, "finetune --text")
    files = ", ".join(p.name for p in written)
    observer.message(f"wrote {output} ({output.stat().st_size / 1e6:.1f} MB: text path and "
                     f"adapters, {trainable:,} trained parameters; the text bank knows "
                     f"{', '.join(bank.names)}) and {files}")  # fmt: skip
    return history, summary, [output, *written]


def _dice(scores: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.3f}" for name, value in scores.items())
