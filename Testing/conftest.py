"""Shared fixtures: golden references of the official models, and models with their weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fastsam3d_core import Sam3D, build_model
from fastsam3d_core.golden import GoldenReference

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
GOLDEN_DIR = SHARED / "golden"
MODEL_NAMES = ("fastsam3d", "sam-med3d-turbo")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if GOLDEN_DIR.is_dir():
        return
    skip = pytest.mark.skip(reason=f"golden references not found at {GOLDEN_DIR}")
    for item in items:
        if {"golden", "golden_data", "fastsam3d_seeded"} & set(item.fixturenames):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def golden_data() -> dict[str, GoldenReference]:
    return {name: GoldenReference.load(GOLDEN_DIR, name) for name in MODEL_NAMES}


@pytest.fixture(scope="session")
def seeded_models(golden_data: dict[str, GoldenReference]) -> dict[str, Sam3D]:
    """Both models, each built once per test session and loaded with its seeded weights."""
    models = {}
    for name, golden in golden_data.items():
        model = build_model(name)
        model.load_state_dict(golden.state_dict(), strict=True)
        models[name] = model
    return models


@pytest.fixture(scope="session")
def golden_outputs(
    golden_data: dict[str, GoldenReference], seeded_models: dict[str, Sam3D]
) -> dict[str, dict[str, torch.Tensor]]:
    """Our outputs for every golden array, computed once per model and session."""
    return {name: golden_data[name].run(seeded_models[name]) for name in MODEL_NAMES}


@pytest.fixture(params=MODEL_NAMES)
def golden(
    request: pytest.FixtureRequest, golden_data: dict[str, GoldenReference]
) -> GoldenReference:
    return golden_data[request.param]


@pytest.fixture(scope="session")
def fastsam3d_seeded(seeded_models: dict[str, Sam3D]) -> Sam3D:
    return seeded_models["fastsam3d"]
