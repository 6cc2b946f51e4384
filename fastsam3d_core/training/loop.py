"""The training loop shared by ``finetune`` and ``distill``: one process, or many under torchrun.

Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) each process joins the group (NCCL on
CUDA, gloo on the CPU), the objective is wrapped in DistributedDataParallel, and each step's
global batch is split across the ranks: rank r takes crops r, r + W, … of it, in
``accumulation`` micro-batches. Which crops a step uses and every crop's click sampler are
derived from (seed, step, position), never from a running random state, so N processes with
batch B compute the same update as one process with batch B, and a run resumed from its
checkpoint continues exactly as if it had not stopped.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ..io._atomic import write_atomically
from .observer import TrainingObserver
from .settings import check_choice
from .validation import BestState, trained_state

# compute_loss(objective, this micro-batch's sample numbers, step) -> its mean loss. Sample n is
# the n-th crop of the whole run (see case_of); it also seeds that crop's randomness.
LossFunction = Callable[[nn.Module, list[int], int], torch.Tensor]


@dataclass(frozen=True)
class LoopConfig:
    """How long and how to train.

    Attributes:
        steps: optimizer steps in all.
        batch_size: crops per step across all processes (a multiple of their number).
        accumulation: micro-batches per process and step (gradient accumulation).
        learning_rate: Adam's.
        seed: seeds crop order and clicks.
        checkpoint: the training-state file: written by rank 0 every ``checkpoint_every``
            steps and resumed from when it exists; :func:`remove_state` removes it once the
            run's output is written.
        checkpoint_every: steps between checkpoints.
        warmup_steps: the learning rate grows linearly to ``learning_rate`` over these steps
            (Adam's first steps move every weight by about the learning rate, whatever its
            gradient: a warm-up keeps them from throwing the model off at once).
        clip_norm: the gradients' global L2 norm is clipped to this (None: not clipped).
        schedule: after the warm-up, ``constant`` keeps the learning rate, ``cosine`` lowers
            it along half a cosine to 0 at ``steps`` (:data:`.settings.SCHEDULES`). At a
            constant rate the weights keep moving by about the rate each step, so the state a
            validation keeps depends on where the last steps happened to land; a decay lets
            them settle.
        run: what identifies the run besides the learning rate, batch size and seed (base
            weights, data, settings; JSON values): a state saved with other values is another
            run's, and is not resumed. ``steps`` is not part of it, so a finished run can be
            continued with more (except down a cosine, whose rates depend on it).
    """

    steps: int
    learning_rate: float
    batch_size: int = 1
    accumulation: int = 1
    seed: int = 0
    checkpoint: Path | None = None
    checkpoint_every: int = 25
    warmup_steps: int = 0
    clip_norm: float | None = None
    schedule: str = "constant"
    run: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_choice("schedule", self.schedule)

    @classmethod
    def for_command(cls, settings: Any, steps: int, run: dict, **options: Any) -> LoopConfig:
        """A training command's loop (``settings``: its FinetuneSettings or DistillSettings):
        its learning rate, batch, accumulation, seed and checkpoint interval, the state kept
        beside its output as ``OUTPUT.state``; ``options``: the other fields."""
        return cls(
            steps=steps,
            learning_rate=settings.learning_rate,
            batch_size=settings.batch_size,
            accumulation=settings.accumulation,
            seed=settings.seed,
            checkpoint=settings.output.with_name(settings.output.name + ".state"),
            checkpoint_every=settings.checkpoint_every,
            run=run,
            **options,
        )

    def learning_rate_at(self, step: int) -> float:
        """The learning rate of ``step`` (0-based): linear warm-up, then ``schedule``'s."""
        if step < self.warmup_steps:
            return self.learning_rate * (step + 1) / self.warmup_steps
        if self.schedule == "cosine":
            progress = (step - self.warmup_steps) / max(1, self.steps - self.warmup_steps)
            return self.learning_rate * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
        return self.learning_rate


@dataclass(frozen=True)
class Ranks:
    """This process's place in the group: rank, world size, and its device."""

    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def join_group(device: torch.device) -> Ranks:
    """This process's :class:`Ranks`; joins the process group when torchrun started it.

    Under torchrun a CUDA device becomes this process's own GPU (``LOCAL_RANK``).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Ranks(0, 1, device)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Ranks(dist.get_rank(), dist.get_world_size(), device)


def leave_group() -> None:
    """Leave the process group, once every rank has come this far and the DistributedDataParallel
    wrapper (kept alive by reference cycles) is gone: a group torn down under a live wrapper is
    freed at exit instead, and its threads abort the process ('terminate called without an
    active exception': 1 in 6 two-process gloo runs)."""
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()


@contextlib.contextmanager
def process_group(device: torch.device) -> Iterator[Ranks]:
    """:func:`join_group` for the block, and :func:`leave_group` after it, whatever happens."""
    ranks = join_group(device)
    try:
        yield ranks
    finally:
        leave_group()


def case_of(sample: int, cases: int, seed: int) -> int:
    """The case (index) of the run's ``sample``-th crop: epochs of seeded permutations."""
    epoch, within = divmod(sample, cases)
    return int(np.random.default_rng([seed, epoch]).permutation(cases)[within])


def train(
    objective: nn.Module,
    compute_loss: LossFunction,
    config: LoopConfig,
    ranks: Ranks,
    describe: Callable[[int], dict] | None = None,
    validation: BestState | None = None,
    observer: TrainingObserver | None = None,
) -> list[dict]:
    """Run the optimizer steps not yet in ``config.checkpoint``; returns one record per step.

    Args:
        objective: holds every parameter; the ones with ``requires_grad`` are trained.
        compute_loss: a micro-batch's mean loss.
        ranks: from :func:`join_group`.
        describe: extra columns of a step's record (e.g. Eq. 2's k).
        validation: evaluates the start and every few steps, keeps the best state (saved with
            the training state) and may stop the run early; the parameters are left as the
            last step made them (:meth:`BestState.restore_best` puts the best ones back).
        observer: told of a resumed state and of every step (default: nothing is shown).

    Raises:
        ValueError: a batch that does not split evenly across processes and micro-batches.
    """
    local = config.batch_size // ranks.world
    if local * ranks.world != config.batch_size or local % config.accumulation:
        raise ValueError(
            f"--batch-size {config.batch_size} must be a multiple of processes ({ranks.world}) "
            f"× --accumulation ({config.accumulation})"
        )
    trained = [p for p in objective.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trained, lr=config.learning_rate)
    observer = observer or TrainingObserver()
    history = _resume(objective, optimizer, config, validation, observer)
    if validation is not None:
        validation.begin(objective)
    wrapped: nn.Module = objective
    if ranks.world > 1:
        device_ids = [ranks.device] if ranks.device.type == "cuda" else None
        # Layer-wise distillation leaves the layers above k (and the neck) out of a step's
        # loss, and which ones changes with k: DDP must look for unused parameters each step.
        wrapped = nn.parallel.DistributedDataParallel(
            objective, device_ids=device_ids, find_unused_parameters=True
        )
    stop = validation is not None and validation.collapsed
    for step in range(len(history), config.steps if not stop else 0):
        started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss_sum = _accumulate_gradients(wrapped, compute_loss, step, config, ranks)
        if config.clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(trained, config.clip_norm)
        for group in optimizer.param_groups:
            group["lr"] = config.learning_rate_at(step)
        optimizer.step()
        if ranks.world > 1:
            dist.all_reduce(loss_sum)
            loss_sum /= ranks.world
        record = {"step": step + 1, "loss": float(loss_sum), "seconds": 0.0}
        record.update(describe(step) if describe else {})
        record["seconds"] = time.perf_counter() - started
        last = step + 1 == config.steps
        if validation is not None:
            stop = validation.after_step(step + 1, objective, last, record)
        history.append(record)
        if ranks.main:
            observer.step_finished(record, config.steps)
            due = (step + 1) % config.checkpoint_every == 0 or last or stop
            if config.checkpoint is not None and due:
                _save_state(objective, optimizer, history, config, validation)
        if stop:
            break
    if ranks.main:
        observer.steps_ended()
    return history


def _accumulate_gradients(
    wrapped: nn.Module, compute_loss: LossFunction, step: int, config: LoopConfig, ranks: Ranks
) -> torch.Tensor:
    """Backpropagate this rank's share of ``step``'s batch, in ``config.accumulation``
    micro-batches; returns its loss (the mean over the share)."""
    local = config.batch_size // ranks.world
    samples = range(step * config.batch_size, (step + 1) * config.batch_size)
    mine = list(samples)[ranks.rank :: ranks.world]
    loss_sum = torch.zeros((), device=ranks.device)
    chunks = np.array_split(np.array(mine), config.accumulation)
    for number, chunk in enumerate(chunks):
        last = number == len(chunks) - 1
        quiet: contextlib.AbstractContextManager = contextlib.nullcontext()
        if isinstance(wrapped, nn.parallel.DistributedDataParallel) and not last:
            quiet = wrapped.no_sync()  # all-reduce once, after the last micro-batch
        with quiet, _autocast(ranks.device):
            loss = compute_loss(wrapped, chunk.tolist(), step) * (len(chunk) / local)
        loss.backward()
        loss_sum += loss.detach().float()
    return loss_sum


def remove_state(config: LoopConfig, ranks: Ranks) -> None:
    """Remove the training state once the run's output is written (not before: a run that
    fails after its last step, while evaluating or writing, resumes with nothing to train)."""
    if ranks.main and config.checkpoint is not None:
        config.checkpoint.unlink(missing_ok=True)


def _autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bfloat16 mixed precision on CUDA (no loss scaling needed); float32 elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _save_state(
    objective: nn.Module,
    optimizer: torch.optim.Optimizer,
    history: list[dict],
    config: LoopConfig,
    validation: BestState | None,
) -> None:
    state = {
        "trained": trained_state(objective),
        "optimizer": optimizer.state_dict(),
        "history": history,
        "run": json.dumps(_identity(config), sort_keys=True),
    }
    if validation is not None:
        state["validation"] = validation.state_dict()
    path = config.checkpoint
    assert path is not None
    write_atomically(path, ".pt", lambda temporary: torch.save(state, temporary))


def _identity(config: LoopConfig) -> dict:
    """What a saved state must match to be resumed: settings that change the updates."""
    return {
        **config.run,
        "learning_rate": config.learning_rate,
        "batch_size": config.batch_size,
        "seed": config.seed,
        # Recipes added later: absent from the states saved before them, which used neither.
        **({"warmup_steps": config.warmup_steps} if config.warmup_steps else {}),
        **({"clip_norm": config.clip_norm} if config.clip_norm is not None else {}),
        # A decaying rate depends on the run's length: one continued with more steps is another.
        **({"schedule": config.schedule, "schedule_steps": config.steps}
           if config.schedule != "constant" else {}),  # fmt: skip
    }


def _resume(
    objective: nn.Module,
    optimizer: torch.optim.Optimizer,
    config: LoopConfig,
    validation: BestState | None = None,
    observer: TrainingObserver | None = None,
) -> list:
    """The history so far, with parameters, optimizer and the best state so far restored from
    ``config.checkpoint`` if it exists.

    Raises:
        ValueError: the file is the state of another run (other parameters, or other
            ``config.run``).
    """
    path = config.checkpoint
    if path is None or not path.is_file():
        return []
    state = torch.load(path, map_location="cpu", weights_only=True)
    trained = dict(objective.named_parameters())
    differ = []
    if "run" in state:  # states saved before runs had an identity have their parameters only
        saved, run = json.loads(state["run"]), _identity(config)
        differ = sorted(key for key in {*saved, *run} if saved.get(key) != run.get(key))
    if set(state["trained"]) != {n for n, p in trained.items() if p.requires_grad}:
        differ = ["the trained parameters", *differ]
    if differ:
        raise ValueError(
            f"{path}: the saved state of another training run ({', '.join(differ)} differ); "
            "remove it to start afresh, or choose another output"
        )
    with torch.no_grad():
        for name, value in state["trained"].items():
            trained[name].copy_(value)
    optimizer.load_state_dict(state["optimizer"])
    if validation is not None and "validation" in state:
        validation.load_state_dict(state["validation"])
    if observer is not None:
        observer.resumed(path, len(state["history"]))
    return list(state["history"])


def write_metrics(
    history: list[dict], prefix: Path, title: str, dice: dict[str, dict] | None = None
) -> list[Path]:
    """``PREFIX.metrics.csv`` and ``.json`` (one row per step), and a plot ``.png`` of the loss
    (and of ``dice``: curve name -> {clicks: Dice}) when matplotlib is installed; returns the
    files written."""
    # Validation columns appear only on the steps that were evaluated.
    columns = list(dict.fromkeys(key for record in history for key in record)) or ["step", "loss"]
    rows = [",".join(str(r.get(c, "")) for c in columns) for r in history]
    csv = prefix.with_name(prefix.name + ".metrics.csv")
    csv.write_text("\n".join([",".join(columns), *rows]) + "\n", encoding="utf-8")
    as_json = prefix.with_name(prefix.name + ".metrics.json")
    as_json.write_text(json.dumps(history, indent=1), encoding="utf-8")
    written = [csv, as_json]
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot
    except ImportError:
        return written
    figure, axes = pyplot.subplots(1, 2 if dice else 1, figsize=(10 if dice else 6, 3.5))
    loss_axis = axes[0] if dice else axes
    loss_axis.plot([r["step"] for r in history], [r["loss"] for r in history])
    loss_axis.set(xlabel="step", ylabel="loss", title=title)
    for name, curve in (dice or {}).items():
        axes[1].plot(list(curve), list(curve.values()), marker="o", label=name)
    if dice:
        axes[1].set(xlabel="clicks", ylabel="Dice (held out)", ylim=(0, 1))
        axes[1].legend()
    plot = prefix.with_name(prefix.name + ".png")
    figure.tight_layout()
    figure.savefig(plot, dpi=100)
    pyplot.close(figure)
    return [*written, plot]
