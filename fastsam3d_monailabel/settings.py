"""The app's settings, as MONAI Label passes them: ``--conf KEY VALUE`` pairs, all text.

=================  ==========================================================================
key                value
=================  ==========================================================================
``models``         comma-separated models to serve (default ``fastsam3d``)
``weights``        a local checkpoint for every model served; ``weights.MODEL`` for one model
                   (default: the released weights, downloaded once into the weights cache)
``adapter``        an adapter file (``fastsam3d finetune``); ``adapter.MODEL`` for one model
``device``         ``auto`` (default), ``cpu``, ``cuda``, ``cuda:1``, ``mps``
``precision``      the image encoder's: ``float32`` (default), ``auto``, ``bfloat16``, ...
``labels``         comma-separated structure names offered to clients (OHIF lists them)
``sessions``       images held at once (default 4)
``session_minutes`` minutes an idle image's session is kept (default 30)
=================  ==========================================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from fastsam3d_core.models import MODEL_REGISTRY

from .sessions import DEFAULT_IDLE_MINUTES, DEFAULT_MAX_IMAGES

#: Names offered to clients when ``labels`` is not set: structures the DICOM SEG codes by name
#: (SNOMED CT), so that a SEG of them carries the right code; any other name is coded Tissue.
DEFAULT_LABELS = (
    "liver", "spleen", "kidney", "pancreas", "aorta", "lung", "heart", "brain", "stomach",
    "gallbladder", "urinary bladder", "prostate", "tumor", "lesion", "cyst", "edema",
)


@dataclass(frozen=True)
class AppSettings:
    """The app's settings (see the module's table for their ``--conf`` keys)."""

    models: tuple[str, ...] = ("fastsam3d",)
    weights: tuple[tuple[str, str], ...] = ()
    adapters: tuple[tuple[str, str], ...] = ()
    device: str = "auto"
    precision: str = "float32"
    labels: tuple[str, ...] = DEFAULT_LABELS
    max_images: int = DEFAULT_MAX_IMAGES
    idle_minutes: float = DEFAULT_IDLE_MINUTES

    def weights_of(self, model: str) -> str | None:
        """The checkpoint file given for ``model``, or None for the released weights."""
        return dict(self.weights).get(model)

    def adapter_of(self, model: str) -> str | None:
        """The adapter file given for ``model``, or None."""
        return dict(self.adapters).get(model)

    @classmethod
    def from_conf(cls, conf: Mapping[str, str]) -> AppSettings:
        """Settings from MONAI Label's ``conf``.

        Raises:
            ValueError: one line: an unknown model, or a number that is not one.
        """
        models = _names(conf.get("models")) or cls.models
        unknown = [m for m in models if m not in MODEL_REGISTRY]
        if unknown:
            raise ValueError(
                f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(MODEL_REGISTRY)}"
            )
        return cls(
            models=models,
            weights=_per_model(conf, "weights", models),
            adapters=_per_model(conf, "adapter", models),
            device=conf.get("device") or cls.device,
            precision=conf.get("precision") or cls.precision,
            labels=_names(conf.get("labels")) or DEFAULT_LABELS,
            max_images=int(_number(conf, "sessions", cls.max_images)),
            idle_minutes=_number(conf, "session_minutes", cls.idle_minutes),
        )

    def conf_pairs(self) -> list[tuple[str, str]]:
        """These settings as ``--conf`` pairs that :meth:`from_conf` reads back."""
        pairs = [("models", ",".join(self.models))]
        pairs += [(f"weights.{model}", path) for model, path in self.weights]
        pairs += [(f"adapter.{model}", path) for model, path in self.adapters]
        pairs += [
            ("device", self.device),
            ("precision", self.precision),
            ("labels", ",".join(self.labels)),
            ("sessions", str(self.max_images)),
            ("session_minutes", f"{self.idle_minutes:g}"),
        ]
        return pairs


def _names(value: str | None) -> tuple[str, ...]:
    return tuple(name.strip() for name in (value or "").split(",") if name.strip())


def _per_model(
    conf: Mapping[str, str], key: str, models: tuple[str, ...]
) -> tuple[tuple[str, str], ...]:
    given = {model: conf.get(f"{key}.{model}") or conf.get(key) for model in models}
    return tuple((model, path) for model, path in given.items() if path)


def _number(conf: Mapping[str, str], key: str, default: float) -> float:
    text = conf.get(key)
    if text is None or text == "":
        return default
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"--conf {key} must be a number, not {text!r}") from None
    if not value > 0:
        raise ValueError(f"--conf {key} must be above 0, not {text!r}")
    return value
