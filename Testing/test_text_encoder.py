"""CLIP text side of text prompts (issue 29): tokenizer, text tower, weight loading.

The vocabulary is the registry's ``clip-bpe-vocab`` wheel (open_clip_torch 3.3.0), fetched here
with pip from the package index, as docs/text-prompts.md tells users to when Hugging Face or
files.pythonhosted.org cannot be reached directly. The published text weights (605 MB) are not
downloaded by the tests: the loader is tested on files written here in each published naming.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from fastsam3d_core.text import (
    ClipTokenizer,
    TextModelError,
    VocabularyError,
    load_text_encoder,
    seeded_text_encoder,
)
from fastsam3d_core.text.vocabulary import VOCABULARY_WEIGHTS_NAME
from fastsam3d_core.weights.download import sha256_of_file
from fastsam3d_core.weights.formats import is_safetensors_start
from fastsam3d_core.weights.registry import WEIGHTS

VOCABULARY_PACKAGE = "open-clip-torch==3.3.0"

# Token ids of open_clip 3.3.0's own tokenizer (open_clip/tokenizer.py's SimpleTokenizer, with
# ftfy 6.3 and regex, run once on the same vocabulary, outside this project), written here as
# literals: an independent implementation of CLIP's BPE to compare with.
KNOWN_IDS = {
    "a photo of a cat": [49406, 320, 1125, 539, 320, 2368, 49407],
    "liver": [49406, 12639, 49407],
    "left kidney": [49406, 1823, 14610, 49407],
    "right kidney": [49406, 1155, 14610, 49407],
    "spleen": [49406, 588, 15940, 49407],
    "hepatic vein": [49406, 17724, 2647, 29169, 49407],
    "pancreatic duct": [49406, 49337, 26829, 49407],
    "T2-weighted MRI": [49406, 339, 273, 268, 43179, 24773, 49407],
    "a CT of the abdomen": [49406, 320, 1122, 539, 518, 596, 2164, 576, 49407],
    "Gallbladder": [49406, 3011, 33593, 49407],
    "inferior vena cava": [49406, 16258, 2498, 47442, 48682, 49407],
    "esophagus": [49406, 957, 38634, 8018, 49407],
    "left adrenal gland": [49406, 1823, 24204, 566, 41441, 49407],
    "portal vein and splenic vein": [49406, 14982, 29169, 537, 18552, 1029, 29169, 49407],
    "  Urinary   BLADDER ": [49406, 565, 11337, 33593, 49407],
    "tumour &amp; cyst": [49406, 45129, 261, 1470, 545, 49407],
    "kidney's cortex": [49406, 14610, 568, 40109, 49407],
    "CT 3mm 120kVp": [49406, 1122, 274, 2848, 272, 273, 271, 74, 3896, 49407],
    "prostate/uterus": [49406, 28808, 270, 39197, 718, 49407],
    "duodenum": [49406, 691, 78, 1177, 1008, 49407],
    "aorta": [49406, 32044, 1397, 49407],
    "Brain tumor (T1-Gd)": [49406, 4812, 22616, 263, 339, 272, 268, 14604, 264, 49407],
}


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert message and "\n" not in message, message
    return message


@pytest.fixture(scope="session")
def vocabulary_wheel(clip_vocabulary_wheel) -> Path:
    """The registry's vocabulary wheel (conftest: the cached copy, else fetched with pip)."""
    return clip_vocabulary_wheel


@pytest.fixture(scope="module")
def tokenizer(vocabulary_wheel) -> ClipTokenizer:
    return ClipTokenizer(vocabulary_wheel)


@pytest.fixture(scope="module")
def seeded(vocabulary_wheel):
    return seeded_text_encoder(0, vocabulary=vocabulary_wheel)


# Tokenizer


@pytest.mark.parametrize("text", sorted(KNOWN_IDS))
def test_the_tokenizer_gives_clips_ids(tokenizer, text):
    expected = KNOWN_IDS[text]
    tokens = tokenizer.tokenize([text])
    assert tokens.dtype == torch.long and tokens.shape == (1, 77)
    assert tokens[0, : len(expected)].tolist() == expected
    assert not tokens[0, len(expected) :].any()  # zero padding


def test_a_long_text_is_cut_keeping_the_end_token(tokenizer):
    tokens = tokenizer.tokenize(["liver " * 100, "spleen"])
    assert tokens.shape == (2, 77)
    assert tokens[0].tolist() == [49406] + [12639] * 75 + [49407]
    assert tokenizer.decode(tokens[1].tolist()) == "spleen"
    assert tokenizer.decode(tokenizer.tokenize("Left  Kidney!")[0].tolist()) == "left kidney !"


def test_the_vocabulary_comes_from_the_weights_cache(vocabulary_wheel, tmp_path, monkeypatch):
    monkeypatch.setenv("FASTSAM3D_CACHE_DIR", str(tmp_path))
    entry = WEIGHTS[VOCABULARY_WEIGHTS_NAME]
    if _an_installed_copy_exists():
        pytest.skip("an installed open_clip or clip package provides the vocabulary")
    with pytest.raises(VocabularyError) as missing:
        ClipTokenizer(download=False)
    assert f"fastsam3d weights download {VOCABULARY_WEIGHTS_NAME}" in _one_line(missing)
    (tmp_path / entry.filename).write_bytes(vocabulary_wheel.read_bytes())
    assert ClipTokenizer(download=False).tokenize("liver")[0, :3].tolist() == [49406, 12639, 49407]


def test_a_file_that_is_not_clips_vocabulary_is_refused(tmp_path):
    import gzip

    other = tmp_path / "bpe_simple_vocab_16e6.txt.gz"
    other.write_bytes(gzip.compress(b"#version: 0.2\nt h\n"))
    with pytest.raises(VocabularyError) as error:
        ClipTokenizer(other)
    assert "does not hold CLIP's BPE vocabulary" in _one_line(error)


def test_the_registry_records_the_vocabulary_wheel(vocabulary_wheel):
    entry = WEIGHTS[VOCABULARY_WEIGHTS_NAME]
    assert sha256_of_file(vocabulary_wheel) == entry.sha256
    assert vocabulary_wheel.stat().st_size == entry.size and entry.size_exact
    assert entry.url.endswith("/" + entry.filename) and "MIT" in entry.licence
    text_model = WEIGHTS["clip-vit-b-32-laion2b"]
    assert text_model.url.startswith("https://huggingface.co/laion/CLIP-ViT-B-32-laion2B-s34B")
    assert text_model.architecture == "clip-text-gelu" and text_model.licence.startswith("MIT")


def _an_installed_copy_exists() -> bool:
    import importlib.util

    return any(importlib.util.find_spec(name) is not None for name in ("open_clip", "clip"))


# The text tower against a reference written from CLIP's definition


def _layer_norm(x, weight, bias):
    mean = x.mean(dim=-1, keepdim=True)
    variance = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    return (x - mean) / torch.sqrt(variance + 1e-5) * weight + bias


def _activation(x, kind):
    if kind == "quick_gelu":
        return x * torch.sigmoid(1.702 * x)
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def _reference_attention(x, weights, prefix, heads):
    """Causal multi-head self-attention, one head at a time, in float64."""
    width = x.shape[-1]
    head_width = width // heads
    qkv = x @ weights[prefix + "in_proj_weight"].T + weights[prefix + "in_proj_bias"]
    query, key, value = qkv[..., :width], qkv[..., width : 2 * width], qkv[..., 2 * width :]
    length = x.shape[1]
    future = torch.triu(torch.ones(length, length, dtype=torch.bool), diagonal=1)
    outputs = []
    for head in range(heads):
        span = slice(head * head_width, (head + 1) * head_width)
        scores = query[..., span] @ key[..., span].transpose(1, 2) / math.sqrt(head_width)
        scores = scores.masked_fill(future, float("-inf"))
        outputs.append(torch.softmax(scores, dim=-1) @ value[..., span])
    joined = torch.cat(outputs, dim=-1)
    return joined @ weights[prefix + "out_proj.weight"].T + weights[prefix + "out_proj.bias"]


def _reference_text_features(state, tokens, activation, layers=12, heads=8):
    """CLIP's text tower from its definition (Radford et al. 2021), on the published names."""
    weights = {key: value.double() for key, value in state.items()}
    x = weights["token_embedding.weight"][tokens] + weights["positional_embedding"]
    for layer in range(layers):
        block = f"transformer.resblocks.{layer}."
        normed = _layer_norm(x, weights[block + "ln_1.weight"], weights[block + "ln_1.bias"])
        x = x + _reference_attention(normed, weights, block + "attn.", heads)
        normed = _layer_norm(x, weights[block + "ln_2.weight"], weights[block + "ln_2.bias"])
        hidden = normed @ weights[block + "mlp.c_fc.weight"].T + weights[block + "mlp.c_fc.bias"]
        hidden = _activation(hidden, activation)
        x = x + hidden @ weights[block + "mlp.c_proj.weight"].T + weights[block + "mlp.c_proj.bias"]
    x = _layer_norm(x, weights["ln_final.weight"], weights["ln_final.bias"])
    end = x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)]
    return end @ weights["text_projection"]


@pytest.mark.parametrize("activation", ["gelu", "quick_gelu"])
def test_the_encoder_matches_the_reference_computation(vocabulary_wheel, tokenizer, activation):
    encoder = seeded_text_encoder(3, activation=activation, vocabulary=vocabulary_wheel)
    texts = ["liver", "left kidney", "a CT of the abdomen", "portal vein and splenic vein"]
    tokens = tokenizer.tokenize(texts)
    expected = _reference_text_features(encoder.state_dict(), tokens, activation)
    embedded = encoder.embed(texts)
    assert embedded.shape == (4, 512) and embedded.dtype == torch.float32
    assert torch.allclose(embedded.double(), expected, atol=1e-4, rtol=0)
    assert expected.abs().max() > 0.1  # not a comparison of near-zero numbers
    assert not torch.allclose(embedded[0], embedded[1])  # the text matters


def test_the_activation_is_part_of_the_model(vocabulary_wheel):
    gelu = seeded_text_encoder(3, vocabulary=vocabulary_wheel).embed("liver")
    quick = seeded_text_encoder(3, "quick_gelu", vocabulary=vocabulary_wheel).embed("liver")
    assert not torch.allclose(gelu, quick, atol=1e-4)


def test_seeded_encoders_are_reproducible_and_leave_the_random_state(vocabulary_wheel):
    state = torch.random.get_rng_state()
    first = seeded_text_encoder(7, vocabulary=vocabulary_wheel)
    assert torch.equal(torch.random.get_rng_state(), state)
    again = seeded_text_encoder(7, vocabulary=vocabulary_wheel)
    other = seeded_text_encoder(8, vocabulary=vocabulary_wheel)
    assert torch.equal(first.embed("spleen"), again.embed("spleen"))
    assert not torch.allclose(first.embed("spleen"), other.embed("spleen"))
    assert first.identity == {"name": "seeded", "sha256": "seeded:7", "activation": "gelu"}
    named = load_text_encoder("seeded:7", vocabulary=vocabulary_wheel)
    assert named.identity == first.identity
    assert torch.equal(named.embed("spleen"), first.embed("spleen"))


def test_empty_text_is_refused_in_one_line(seeded):
    for text in ["", "   "]:
        with pytest.raises(ValueError) as error:
            seeded.embed(["liver", text])
        assert "empty text" in _one_line(error)


# Weight files in the published namings


def _fake_visual_tower() -> dict[str, torch.Tensor]:
    return {
        "visual.conv1.weight": torch.randn(768, 3, 32, 32),
        "visual.transformer.resblocks.0.attn.in_proj_weight": torch.randn(2304, 768),
        "visual.proj": torch.randn(768, 512),
        "logit_scale": torch.tensor(4.6052),
    }


def _text_state(encoder) -> dict[str, torch.Tensor]:
    return {key: value.clone() for key, value in encoder.state_dict().items()}


def test_openai_and_openclip_files_load_to_the_same_encoder(seeded, vocabulary_wheel, tmp_path):
    from safetensors.torch import save_file

    text = _text_state(seeded)
    openai = tmp_path / "openai_clip_state.pt"  # OpenAI CLIP: text keys at the top, fp16
    torch.save({**{k: v.half().float() for k, v in text.items()}, **_fake_visual_tower()}, openai)
    openclip = tmp_path / "open_clip_model.safetensors"  # OpenCLIP CustomTextCLIP: under text.
    save_file({**{"text." + k: v for k, v in text.items()}, **_fake_visual_tower()}, openclip)
    training = tmp_path / "epoch_32.pt"  # OpenCLIP training checkpoint, DDP-saved
    torch.save({"epoch": 32, "state_dict": {"module." + k: v for k, v in text.items()}}, training)

    reference = seeded.embed(KNOWN_IDS_SUBSET)
    for path in (openclip, training):
        loaded = load_text_encoder(path, vocabulary=vocabulary_wheel)
        assert torch.equal(loaded.embed(KNOWN_IDS_SUBSET), reference), path.name
        assert loaded.identity == {
            "name": path.name, "sha256": sha256_of_file(path), "activation": "gelu"
        }  # fmt: skip
    halved = load_text_encoder(openai, activation="gelu", vocabulary=vocabulary_wheel)
    # The same weights rounded through fp16, as OpenAI ships them: close, not equal.
    assert torch.allclose(halved.embed(KNOWN_IDS_SUBSET), reference, atol=0.05)
    openai_like = tmp_path / "openai_full_precision.pt"
    torch.save({**text, **_fake_visual_tower()}, openai_like)
    same = load_text_encoder(openai_like, vocabulary=vocabulary_wheel)
    assert torch.equal(same.embed(KNOWN_IDS_SUBSET), reference)


KNOWN_IDS_SUBSET = ["liver", "hepatic vein", "T2-weighted MRI"]


def _refusal(path) -> str:
    with pytest.raises(TextModelError) as error:
        load_text_encoder(path)
    return _one_line(error)


def test_bad_text_model_files_are_refused_in_one_line(seeded, tmp_path):
    text = _text_state(seeded)
    wrong_shape = dict(text, **{"token_embedding.weight": torch.zeros(49408, 768)})
    torch.save(wrong_shape, tmp_path / "wide.pt")
    message = _refusal(tmp_path / "wide.pt")
    assert "wrong shapes: token_embedding.weight (49408, 768) != (49408, 512)" in message

    missing = {k: v for k, v in text.items() if k != "ln_final.weight"}
    torch.save(missing, tmp_path / "missing.pt")
    assert "missing: ln_final.weight" in _refusal(tmp_path / "missing.pt")

    deeper = dict(text, **{
        k.replace("resblocks.11.", "resblocks.12."): v
        for k, v in text.items() if "resblocks.11." in k
    })  # fmt: skip
    torch.save(deeper, tmp_path / "deeper.pt")
    assert "unexpected: transformer.resblocks.12." in _refusal(tmp_path / "deeper.pt")

    image_model = {"image_encoder.patch_embed.proj.weight": torch.zeros(768, 1, 16, 16, 16)}
    torch.save({"model_state_dict": image_model}, tmp_path / "FastSAM3D.pth")
    assert "not a CLIP text tower" in _refusal(tmp_path / "FastSAM3D.pth")

    broken = dict(text, **{"ln_final.bias": torch.full((512,), float("nan"))})
    torch.save(broken, tmp_path / "nan.pt")
    assert "NaN or infinite" in _refusal(tmp_path / "nan.pt")


def test_unsafe_or_unknown_text_models_are_refused_in_one_line(tmp_path):
    scripted = torch.jit.script(torch.nn.Linear(2, 2))
    scripted.save(str(tmp_path / "ViT-B-32.pt"))
    assert "TorchScript archive" in _refusal(tmp_path / "ViT-B-32.pt")

    torch.save({"token_embedding.weight": torch.zeros(1), "hook": _Unsafe()}, tmp_path / "code.pt")
    assert "run code" in _refusal(tmp_path / "code.pt")

    (tmp_path / "page.safetensors").write_text("<html>Not found</html>")
    assert "not a PyTorch checkpoint" in _refusal(tmp_path / "page.safetensors")

    truncated = tmp_path / "cut.safetensors"
    from safetensors.torch import save_file

    save_file({"token_embedding.weight": torch.zeros(64, 8)}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:-100])
    assert "not a readable safetensors file" in _refusal(truncated)

    assert "unknown text model 'no-such-model'" in _refusal("no-such-model")


class _Unsafe:
    """An object whose unpickling would need this class: weights_only refuses it."""


def test_the_downloader_accepts_safetensors_and_not_pages(tmp_path):
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(3)}, tmp_path / "w.safetensors")
    assert is_safetensors_start((tmp_path / "w.safetensors").read_bytes()[:16])
    assert not is_safetensors_start(b"<!DOCTYPE html><html>")
    assert not is_safetensors_start(b"PK\x03\x04" + bytes(12))
