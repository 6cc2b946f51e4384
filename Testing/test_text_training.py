"""``fastsam3d finetune --text``: RefSAM3D's text path trained on the named structures of the
multi-label 3 mm CT, with the golden references' seeded weights (random, not trained: every
point of Dice is earned) and a seeded CLIP text tower written to a file.

The CT's labels are TotalSegmentator's (a prediction, not manual): 1 spleen, 2 right kidney,
3 left kidney, 5 liver, 6 stomach; ``dataset.json`` names these five.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA_DIR, invoke_cli, seeded_model

from fastsam3d_core.models.text_reference import NoTextPath, TextReferenceConfig
from fastsam3d_core.models.text_reference import attach_text_reference as attach_text
from fastsam3d_core.session.model_predictor import ModelPredictor
from fastsam3d_core.training.data import find_cases
from fastsam3d_core.training.text_data import parse_synonyms, text_cases
from fastsam3d_core.training.text_objective import (
    dice,
    text_logits_on_volume,
    tile_features,
)
from fastsam3d_core.weights.adapter_file import load_adapter, read_adapter, read_text_bank
from fastsam3d_core.weights.text_bank import TextBank, TextNotKnown, text_key

CT = SHARED_DATA_DIR / "totalseg_ct"
ORGANS = {"spleen": 1, "kidney_right": 2, "kidney_left": 3, "liver": 5, "stomach": 6}
# 250 steps from --lr 2e-3 down a cosine, validated every 5: the names are told apart from
# about step 80 (docs/text-prompts.md). At a constant 2e-3 the validated Dice swung by 0.1-0.2
# from one validation to the next, so the liver of the kept state depended on the CPU's
# rounding (0.49-0.66 over 150-step runs); with the decay the last 50 steps settle. In 40 steps
# at 1e-3, before the vocabulary term and the direct text term, the "liver" and "spleen" masks
# overlapped with Dice 0.68-0.85.
STEPS = 250


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def vocabulary_cache(tmp_path_factory) -> Path:
    """A weights cache holding CLIP's vocabulary (the registry's open_clip_torch wheel): the
    user's cached copy, else fetched with pip, as Testing/test_text_encoder.py does."""
    from fastsam3d_core.text.vocabulary import VOCABULARY_WEIGHTS_NAME
    from fastsam3d_core.weights.download import cached_weights_path
    from fastsam3d_core.weights.registry import WEIGHTS

    entry = WEIGHTS[VOCABULARY_WEIGHTS_NAME]
    cache = tmp_path_factory.mktemp("cache")
    cached = cached_weights_path(entry)
    if cached.is_file():
        (cache / entry.filename).write_bytes(cached.read_bytes())
        return cache
    run = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
         f"open-clip-torch=={entry.filename.split('-')[1]}", "-d", str(cache)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    if run.returncode != 0 or not (cache / entry.filename).is_file():
        reason = f"pip could not fetch CLIP's vocabulary: {run.stderr.strip()[-300:]}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return cache


@pytest.fixture(scope="module")
def text_setup(tmp_path_factory, vocabulary_cache):
    """The seeded base checkpoint, the seeded text tower as a file, and the CT as an nnU-Net
    folder naming five organs."""
    from fastsam3d_core.text import seeded_text_encoder

    folder = tmp_path_factory.mktemp("text")
    checkpoint = folder / "fastsam3d-seeded.pth"
    torch.save({"model_state_dict": seeded_model("fastsam3d").state_dict()}, checkpoint)
    text_model = folder / "clip-text-seeded.pt"
    torch.save(seeded_text_encoder(0).state_dict(), text_model)
    data = folder / "organs"
    (data / "imagesTr").mkdir(parents=True)
    (data / "labelsTr").mkdir()
    (data / "imagesTr" / "ct_0000.nii.gz").symlink_to(CT / "example_ct_3mm.nii.gz")
    (data / "labelsTr" / "ct.nii.gz").symlink_to(CT / "example_seg_3mm.nii.gz")
    labels = {"background": 0, **ORGANS}
    (data / "dataset.json").write_text(json.dumps({"labels": labels}), encoding="utf-8")
    return {"checkpoint": checkpoint, "text_model": text_model, "data": data,
            "cache": vocabulary_cache}  # fmt: skip


@pytest.fixture(scope="module")
def trained(text_setup, tmp_path_factory, pytestconfig):
    """One --text run (the command line, in this process) and what it wrote."""
    output = tmp_path_factory.mktemp("adapter") / "organs.text.pt"
    hashes = {key: _sha256(text_setup[key]) for key in ("checkpoint", "text_model")}
    previous = os.environ.get("FASTSAM3D_CACHE_DIR")
    os.environ["FASTSAM3D_CACHE_DIR"] = str(text_setup["cache"])
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # as the other training tests (CI: 2 cores)
    try:
        result = invoke_cli(["finetune", text_setup["data"], "--text", "--weights",
                             text_setup["checkpoint"], "--text-model", text_setup["text_model"],
                             "--synonym", "liver=hepatic", "--steps", STEPS, "--clicks", "2",
                             "--lr", "2e-3", "--schedule", "cosine", "--validate-every", 5,
                             "--device", "cpu",
                             "-o", output])  # fmt: skip
    finally:
        torch.set_num_threads(threads)
        if previous is None:
            os.environ.pop("FASTSAM3D_CACHE_DIR", None)
        else:
            os.environ["FASTSAM3D_CACHE_DIR"] = previous
    assert result.exit_code == 0, result.stderr + result.stdout
    return {"output": output, "result": result, "hashes": hashes, **text_setup}


def _masks(model, cases, bank: TextBank, names):
    """Whole-volume text masks of the case, bool (I, J, K) per name."""
    predictor = ModelPredictor(model)
    features = tile_features(model, cases)
    return {
        name: text_logits_on_volume(predictor, cases[0], features[0], bank.lookup(name)) > 0
        for name in names
    }


def test_text_training_learns_the_liver_by_name(trained):
    content = read_adapter(trained["output"])
    summary = content["summary"]
    before, after = summary["text_dice_before"], summary["text_dice_after"]
    assert summary["schedule"] == "cosine" and summary["steps"] == STEPS
    print(f"\ntext Dice before {before}\nafter {after}\ntrainable parameters "
          f"{summary['trainable_parameters']:,}")  # fmt: skip
    # Before training the path finds nothing (its untrained offset), whatever the name.
    assert before["liver"] < 0.05 and before["spleen"] < 0.05
    # The base and the text encoder were only read.
    assert _sha256(trained["checkpoint"]) == trained["hashes"]["checkpoint"]
    assert _sha256(trained["text_model"]) == trained["hashes"]["text_model"]
    # The file records the text encoder's identity, the path's shape and the bank.
    text = content["text"]
    assert text["identity"]["sha256"] == trained["hashes"]["text_model"]
    assert TextReferenceConfig.from_dict(text["config"]).depths == (2, 4, 6)
    bank = read_text_bank(trained["output"])
    assert {"liver", "spleen", "kidney right", "hepatic"} <= set(bank.names)
    assert bank.canonical("Hepatic") == "liver" and bank.canonical("Kidney_Right") == "kidney right"

    # A fresh seeded model with the adapter file: "liver" alone, over the whole volume.
    model = seeded_model("fastsam3d")
    load_adapter(model, trained["output"])
    assert model.accepts_text and ModelPredictor(model).accepts_text
    cases = text_cases(find_cases(trained["data"]), trained["data"])
    masks = _masks(model, cases, bank, ["liver", "spleen"])
    liver_dice = dice(masks["liver"], cases[0].structures["liver"])
    assert liver_dice == pytest.approx(after["liver"], abs=1e-6)
    # Learned (the issue's 0.5, with the names' overlap, is the next test's).
    assert liver_dice >= 0.4, after


# With the cosine decay, measured on the AVX2 machine: the liver 0.635 (BLAS, 2 threads) and
# 0.585 (oneDNN), the masks' overlap 0.198 and 0.288 (docs/text-prompts.md). Before it, at a
# constant rate over 150 steps, the liver ranged 0.49-0.66 and the overlap 0.21-0.49.
def test_the_liver_reaches_the_issues_dice_and_the_spleen_differs(trained):
    after = read_adapter(trained["output"])["summary"]["text_dice_after"]
    assert after["liver"] >= 0.5, after
    model = seeded_model("fastsam3d")
    load_adapter(model, trained["output"])
    cases = text_cases(find_cases(trained["data"]), trained["data"])
    masks = _masks(model, cases, read_text_bank(trained["output"]), ["liver", "spleen"])
    overlap = dice(masks["liver"], masks["spleen"])
    print(f"\nDice between the 'liver' and 'spleen' masks: {overlap:.3f}")
    assert overlap < 0.5  # another name, another mask


# Clicks after the text go through the decoder as click tokens (as SAM and RefSAM3D do), with
# the text's prompts, and each is honoured where it landed (fastsam3d_core/models/text_clicks.py).
# Through the seeded decoder alone a click moved its logits by 0.015 and the liver tile not at
# all (0.738 -> 0.738 x3). A click reaches about its own neighbourhood of a tile the liver
# fills, so one sequence's rise depends on where its clicks fell (+0.008 to +0.022 in three
# clicks over eight sequences on one adapter of this recipe); four sequences' mean is the claim.
def test_clicks_refine_the_text_mask(trained):
    """Text first, then three clicks from the errors, decoded with the text's prompts (every
    click so far, the previous logits as mask prompt), in four sequences: the Dice rises in
    each, by 0.01 on average, and no click spoils it."""
    model = seeded_model("fastsam3d")
    load_adapter(model, trained["output"])
    cases = text_cases(find_cases(trained["data"]), trained["data"])
    features = tile_features(model, cases)[0]
    truths = cases[0].truths["liver"]
    # The tile holding most of the liver.
    tile = int(np.argmax([t.sum() for t in truths]))
    text = read_text_bank(trained["output"]).lookup("liver")
    sequences = [
        _text_then_clicks(ModelPredictor(model), features[tile], text, truths[tile], seed)
        for seed in range(4)
    ]
    rises = [max(scores[1:]) - scores[0] for scores in sequences]
    print(f"\nliver tile Dice, text then clicks: {[[round(s, 3) for s in q] for q in sequences]}")
    assert min(rises) > 0 and np.mean(rises) >= 0.01, rises  # a real rise
    for scores in sequences:  # no click spoils it
        assert all(b >= a - 0.01 for a, b in zip(scores, scores[1:])), scores


def _text_then_clicks(predictor, features, text, truth: np.ndarray, seed: int) -> list[float]:
    """The tile's Dice from ``text`` alone, then after each of three clicks placed by the
    evaluation protocol (``seed``: its choice among the error's points)."""
    from fastsam3d_core.evaluation.protocol import next_click

    logits = predictor.decode_text(features, text)
    scores = [_crop_dice(logits, truth)]
    rng, points, labels = np.random.default_rng(seed), [], []
    for number in range(3):
        click = next_click(truth, _upsampled(logits), number, rng)
        if click is None:  # no error left to click on
            break
        points.append(click[0])
        labels.append(click[1])
        logits = predictor.decode_text(features, text, logits, np.array(points, np.float32),
                                       np.array(labels))  # fmt: skip
        scores.append(_crop_dice(logits, truth))
    return scores


def _upsampled(logits: np.ndarray) -> np.ndarray:
    tensor = torch.from_numpy(logits)[None, None]
    return torch.nn.functional.interpolate(
        tensor, size=(128,) * 3, mode="trilinear", align_corners=False
    )[0, 0].numpy()


def _crop_dice(logits: np.ndarray, truth: np.ndarray) -> float:
    return dice(_upsampled(logits) > 0, truth)


def test_bad_text_inputs_are_refused_in_one_line(trained):
    bank = read_text_bank(trained["output"])
    for text in ("", "   ", "_-"):
        with pytest.raises(ValueError, match="empty text") as empty:
            bank.lookup(text)
        assert "\n" not in str(empty.value)
    with pytest.raises(TextNotKnown, match="not in this adapter's vocabulary") as unknown:
        bank.lookup("pancreas")
    message = str(unknown.value)
    assert "\n" not in message and "liver" in message and "--text-model" in message
    with pytest.raises(ValueError, match="expected NAME=SYNONYM"):
        parse_synonyms(["liver"])


def test_an_adapter_without_a_text_path_is_refused_in_one_line(tmp_path):
    from fastsam3d_core.models.adapter import AdapterConfig, attach_adapters
    from fastsam3d_core.weights.adapter_file import save_adapter

    model = seeded_model("fastsam3d")
    attach_adapters(model, AdapterConfig())
    path = tmp_path / "clicks.adapter.pt"
    save_adapter(model, path)
    with pytest.raises(NoTextPath, match="without a text path") as refused:
        read_text_bank(path)
    assert "\n" not in str(refused.value)
    assert not model.accepts_text
    features = ModelPredictor(model).encode_features(_crop())
    with pytest.raises(NoTextPath, match="no text path") as no_path:
        ModelPredictor(model).decode_text(features, np.zeros(512, np.float32))
    assert "\n" not in str(no_path.value)


def _crop():
    from fastsam3d_core.geometry import Crop
    from fastsam3d_core.geometry.crop import CropGrid

    image = np.random.default_rng(0).standard_normal((128,) * 3).astype(np.float32)
    return Crop(image, CropGrid(np.eye(4)))


def test_the_encoder_levels_leave_its_output_unchanged():
    model = seeded_model("fastsam3d")
    image = torch.from_numpy(_crop().image)[None, None]
    with torch.no_grad():
        embedding, levels = model.encode_levels(image)
        assert torch.equal(embedding, model.encode(image))
    assert [tuple(level.shape) for level in levels] == [(1, 8, 8, 8, 768)] * 3
    attach_text(model)
    assert model.accepts_text and model.text_depths == (2, 4, 6)
    with torch.no_grad():  # untrained: the offset keeps every voxel out
        logits, _ = model.decode_text(embedding, levels, torch.randn(2, 512))
    assert logits.shape == (2, 1, 32, 32, 32) and bool((logits < 0).all())


def test_text_keys_fold_case_and_separators():
    assert text_key(" Kidney_Right ") == "kidney right" == text_key("kidney-right")
    assert parse_synonyms(["Liver=Hepatic"]) == {"hepatic": "liver"}
