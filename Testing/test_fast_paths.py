"""Fast paths outside attention equal the plain computation they replace.

(Attention's fast paths are in test_attention.py; the decoder's upscaling in test_bench.py.)
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA_DIR

from fastsam3d_core.geometry import Volume, crop_grid_around, resample, slabs, voxel_kernels
from fastsam3d_core.geometry.paste import logits_on_volume
from fastsam3d_core.models import common
from fastsam3d_core.models.common import linear
from fastsam3d_core.session import Session
from fastsam3d_core.session.result import write_patch


def smooth_logits(seed: int, size: int = 32, offset: float = 0.5) -> torch.Tensor:
    """Blobby logits with large uniform regions and a surface, like a real mask's; a negative
    offset leaves small objects (few rows of the paste-back cross the surface)."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, 1, 4, 4, 4, generator=generator)
    up = torch.nn.functional.interpolate(coarse, size=(size,) * 3, mode="trilinear")
    return up[0, 0] * 10 + offset


@pytest.fixture(params=["compiled", "numpy"])
def voxel_loops(request):
    """The paste-back's voxel loops compiled (where built) and in NumPy, one run each."""
    if request.param == "compiled" and voxel_kernels._voxels is None:
        pytest.skip("the compiled voxel loops are not built here")
    previous = voxel_kernels.set_compiled(request.param == "compiled")
    yield request.param
    voxel_kernels.set_compiled(previous)


@pytest.mark.parametrize("seed,offset", [(0, 0.5), (1, 0.5), (2, -12.0), (3, -14.0)])
@pytest.mark.parametrize("spacing", [(0.7, 0.7, 1.0), (2.0, 0.5, 3.0)])
def test_thresholded_paste_equals_float_paste(seed, offset, spacing, voxel_loops):
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = (-30.0, 10.0, 5.0)
    volume = Volume(np.zeros((150, 170, 90), np.int16), affine)
    grid = crop_grid_around(volume, volume.index_to_ras(np.array([60.0, 100.0, 40.0])))
    logits = smooth_logits(seed, offset=offset)
    float_box = logits_on_volume(logits, grid, volume)
    mask_box = logits_on_volume(logits, grid, volume, threshold=0.0)
    assert mask_box.values.dtype == bool and float_box.values.dtype == np.float32
    np.testing.assert_array_equal(mask_box.values, float_box.values > 0)
    np.testing.assert_array_equal(mask_box.inside, float_box.inside)
    assert mask_box.whole and 0 < mask_box.values.mean() < 1, mask_box.values.mean()


def test_a_small_objects_paste_back_computes_few_planes(monkeypatch):
    """A target plane between two source planes of one sign is set without computing its
    voxels: a small object's box computes few planes (and the test above shows the result is
    the plain one)."""
    resample_module = sys.modules["fastsam3d_core.geometry.resample"]
    computed = []
    signs_between = resample_module.signs_between

    def recorded(below, above, fractions, out):
        computed.extend(fractions)  # one per target plane computed voxel by voxel
        return signs_between(below, above, fractions, out)

    monkeypatch.setattr(resample_module, "signs_between", recorded)
    volume = Volume(np.zeros((150, 170, 90), np.int16), np.diag([0.7, 0.7, 1.0, 1.0]))
    grid = crop_grid_around(volume, volume.index_to_ras(np.array([60.0, 100.0, 40.0])))
    box = logits_on_volume(smooth_logits(2, offset=-12.0), grid, volume, threshold=0.0)
    assert 0 < len(computed) < box.values.shape[0] // 4, (len(computed), box.values.shape)
    assert 0 < box.values.sum() < box.values.size // 100


def real_organ_logits(volume: Volume, labels: np.ndarray, grid) -> np.ndarray:
    """A scan's organ (bool labels on ``volume``'s grid) as 32³ logits of ``grid``: each cell's
    share of the organ from -6 to +6, as a session's mask prompt (0 where half covered)."""
    box_to_ras = volume.ijk_to_ras
    share, _ = resample(labels.astype(np.float32), box_to_ras, grid.crop_to_ras, grid.shape)
    cells = share.reshape(32, 4, 32, 4, 32, 4).mean(axis=(1, 3, 5))
    return ((2 * cells - 1) * 6).astype(np.float32)


@pytest.mark.parametrize("organ", [5, 2])  # the example CT's liver, and its right kidney
def test_paste_back_of_a_real_organ_equals_the_plain_one_bit_for_bit(organ, voxel_loops):
    """On a real scan's organ and on noise, the labelmap (voxels copied where the source planes
    around them share a sign, the rest computed) is exactly the plain float paste-back
    thresholded: on the scan's own grid, and on a 0.7×0.7×1 mm 512×512×300 grid there (a
    click's box of millions of voxels)."""
    ct = SHARED_DATA_DIR / "totalseg_ct" / "example_ct_3mm.nii.gz"
    if not ct.exists():
        pytest.skip(f"{ct} not found")
    from fastsam3d_core.io import read_volume

    volume = read_volume(ct)
    labels = read_volume(ct.with_name("example_seg_3mm.nii.gz")).array == organ
    centre = np.argwhere(labels).mean(axis=0)
    grid = crop_grid_around(volume, volume.index_to_ras(centre))
    fine_affine = np.diag([0.7, 0.7, 1.0, 1.0])
    fine_affine[:3, 3] = volume.index_to_ras(centre) - 0.5 * np.array([0.7 * 512, 0.7 * 512, 300])
    fine = Volume(np.zeros((512, 512, 300), np.int16), fine_affine)
    noise = np.random.default_rng(organ).normal(size=(32, 32, 32)).astype(np.float32)
    for logits in (real_organ_logits(volume, labels, grid), noise):
        for target in (volume, fine):
            float_box = logits_on_volume(logits, grid, target)
            mask_box = logits_on_volume(logits, grid, target, threshold=0.0)
            np.testing.assert_array_equal(mask_box.values, float_box.values > 0)
            assert 0 < mask_box.values.sum() < mask_box.values.size


def test_thresholded_resample_with_targets_outside_the_source():
    rng = np.random.default_rng(4)
    source = rng.normal(size=(12, 10, 8)).astype(np.float32)
    source_to_ras = np.diag([1.0, 1.0, 1.0, 1.0])
    target_to_ras = np.diag([0.4, 0.7, 0.3, 1.0])
    target_to_ras[:3, 3] = (-2.0, 3.0, -1.0)  # part of the target lies outside the source
    values, inside = resample(source, source_to_ras, target_to_ras, (40, 20, 40))
    mask, inside_too = resample(source, source_to_ras, target_to_ras, (40, 20, 40), threshold=0.1)
    assert not inside.all()
    np.testing.assert_array_equal(mask, values > 0.1)
    np.testing.assert_array_equal(inside_too, inside)


def test_session_click_equals_the_plain_paste_back(voxel_loops):
    """A click's labelmap is exactly the thresholded float paste-back of its logits."""

    class Fixed:
        def encode(self, crop):
            return None

        def decode(self, embedding, points, labels, mask_input):
            return smooth_logits(int(len(points)))

    affine = np.diag([0.8, 0.8, 1.2, 1.0])
    volume = Volume(np.zeros((200, 180, 120), np.int16), affine)
    session = Session(volume, Fixed())
    result = session.add_point_ijk(np.array([100.0, 90.0, 60.0]))
    box = logits_on_volume(smooth_logits(1), result.crop, volume)
    expected = np.zeros(volume.shape, bool)
    expected[box.slices] = box.inside & (box.values > 0)
    np.testing.assert_array_equal(result.mask.astype(bool), expected)


@pytest.fixture
def slab_threads():
    """Sets the slab threads for a test (set_thread_count), the default again afterwards."""
    yield slabs.set_thread_count
    slabs.set_thread_count(None)


def test_paste_back_in_threads_equals_one_thread(slab_threads, voxel_loops):
    """The paste-back's slabs computed in several threads give the one-thread voxels, on a
    click's 512×512×300 box (noise and a smooth mask: runs cut at the slabs' edges)."""
    volume = Volume(np.zeros((512, 512, 300), np.int16), np.diag([0.7, 0.7, 1.0, 1.0]))
    grid = crop_grid_around(volume, volume.index_to_ras(np.array([256.0, 256.0, 150.0])))
    noise = np.random.default_rng(3).normal(size=(32, 32, 32)).astype(np.float32)
    for logits in (noise, smooth_logits(0).numpy()):
        by_threads = {}
        for threads in (1, 2, 3):
            slab_threads(threads)
            by_threads[threads] = logits_on_volume(logits, grid, volume, threshold=0.0).values
        np.testing.assert_array_equal(by_threads[2], by_threads[1])
        np.testing.assert_array_equal(by_threads[3], by_threads[1])
        assert 0 < by_threads[1].sum() < by_threads[1].size


def test_paste_back_planes_with_positive_subnormals_equal_the_plain_ones(slab_threads, voxel_loops):
    """Source planes with positive subnormal values (where copying a sign is not proven) and
    without, in one paste-back: each target plane as the plain float computation gives it."""
    resample_module = sys.modules["fastsam3d_core.geometry.resample"]
    slab_threads(2)
    rng = np.random.default_rng(7)
    planes = np.repeat(smooth_logits(4, size=40).numpy()[:, :, :, None], 2, axis=3)
    planes = np.ascontiguousarray(planes.reshape(40, 40, 80)[:12])  # (s0, J', K')
    planes[9:, 3:6, 7:9] = np.float32(1e-40)  # positive subnormals in the last planes only
    positions = np.arange(100) * (11 / 99) + rng.uniform(-0.01, 0.01, 100)
    taps = resample_module._axis_taps(positions, 12, 0, 12, "linear")
    fast = resample_module._positive_planes(planes, taps, (100, 40, 80))
    steps = planes[1:] - planes[:-1]
    for target, (below, fraction) in enumerate(zip(taps.below, taps.fraction)):
        plain = planes[below] if fraction == 0 else steps[below] * fraction + planes[below]
        np.testing.assert_array_equal(fast[target], plain > 0)
    assert 0 < fast.sum() < fast.size


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_a_write_keeps_the_smallest_differing_box_packed(slab_threads, threads, voxel_loops):
    """A write (slabs compared, packed and copied in threads) gives the smallest box where the
    voxels changed, both versions there exactly (the box's k starting inside a packed byte),
    and the mask holding the new voxels; an equal write changes nothing."""
    slab_threads(threads)
    rng = np.random.default_rng(threads)
    mask = (rng.random((70, 60, 45)) < 0.5).astype(np.uint8)
    box = (slice(3, 66), slice(2, 59), slice(4, 41))
    new = mask[box].copy()
    changed = (slice(9, 50), slice(5, 33), slice(7, 30))  # in the box's indices
    new[changed] = rng.random(new[changed].shape) < 0.5
    new[9, 5, 7] = 1 - new[9, 5, 7]  # the box's first and last voxels surely differ
    new[49, 32, 29] = 1 - new[49, 32, 29]
    old = mask.copy()
    patch, voxels = write_patch(7, mask, box, new)
    expected = tuple(slice(b.start + c.start, b.start + c.stop) for b, c in zip(box, changed))
    assert patch.slices == expected and patch.segment_id == 7
    np.testing.assert_array_equal(patch.before, old[expected])
    np.testing.assert_array_equal(patch.after, new[changed])
    np.testing.assert_array_equal(voxels, new[changed])
    written = old.copy()
    written[box] = new
    np.testing.assert_array_equal(mask, written)
    assert write_patch(7, mask, box, new) is None
    np.testing.assert_array_equal(mask, written)


@pytest.mark.parametrize("activation", ["none", "gelu", "relu"])
def test_fused_linear_equals_module_and_activation(activation):
    torch.manual_seed(5)
    layer = torch.nn.Linear(48, 80)
    x = torch.randn(3, 7, 48)
    with torch.inference_mode():
        fused = linear(layer, x, activation)
        plain = linear(layer, x, activation, plain=True)
    expected = {"none": lambda y: y, "gelu": torch.nn.functional.gelu, "relu": torch.relu}
    torch.testing.assert_close(plain, expected[activation](layer(x)))
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-5)
    if common._ONEDNN_LINEAR is not None:  # also where linear() keeps to MKL (AVX2 CPUs)
        with torch.inference_mode():
            onednn = common._onednn_linear(x, layer.weight, layer.bias, activation)
        torch.testing.assert_close(onednn, plain, rtol=1e-5, atol=1e-5)


def test_fused_linear_lets_gradients_reach_the_input_of_a_frozen_layer():
    torch.manual_seed(0)
    layer = torch.nn.Linear(16, 8).requires_grad_(False)
    x = torch.randn(4, 16, requires_grad=True)
    linear(layer, x, "gelu").sum().backward()
    expected = torch.randn(4, 16).copy_(x.detach()).requires_grad_(True)
    torch.nn.functional.gelu(layer(expected)).sum().backward()
    assert x.grad is not None
    torch.testing.assert_close(x.grad, expected.grad)


@pytest.mark.parametrize("keys", [1, 7, 30])
def test_attention_with_few_keys_equals_attend(keys):
    """The image → token attention's (keys, queries) layout computes the same function."""
    from fastsam3d_core.attention import attend
    from fastsam3d_core.models.transformer import _attend_few_keys

    generator = torch.Generator().manual_seed(keys)
    q, k, v = (torch.randn(2, 8, n, 24, generator=generator) * 3 for n in (512, keys, keys))
    expected = attend(q.double(), k.double(), v.double()).float()
    # Float32 rounding of logits up to about 100 (as the fused kernel's own error).
    tolerance = 1e-5 * float(expected.abs().max())
    assert float((_attend_few_keys(q, k, v) - expected).abs().max()) <= tolerance
    assert float((attend(q, k, v) - expected).abs().max()) <= tolerance


def test_decoder_caches_follow_new_weights():
    """What a click keeps between decodes (the dense positional encoding, the upscaling as
    linear weights, transposed token weights) follows weights loaded in place: after new
    weights the decoder still equals the plain path, and differs from before."""
    torch.manual_seed(3)
    from fastsam3d_core.models import build_model

    model = build_model("fastsam3d")
    embedding = torch.randn(1, 384, 8, 8, 8)
    points, labels = torch.tensor([[[10.0, 20.0, 30.0], [60.0, 64.0, 3.0]]]), torch.tensor([[1, 0]])
    mask = torch.randn(1, 1, 32, 32, 32)

    def decode(backend: str) -> torch.Tensor:
        model.set_attention_backend(backend)
        with torch.inference_mode():
            return model.decode(embedding, points, labels, mask)[0]

    before = decode("exact")
    with torch.no_grad():
        for parameter in model.mask_decoder.parameters():
            parameter.mul_(1.1)
        model.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix.mul_(0.5)
    after, plain = decode("exact"), decode("reference")
    assert (after - before).abs().max() > 1e-2
    assert (after - plain).abs().max() <= 1e-5 * plain.abs().max()


def test_predictor_clicks_with_the_decoders_cache_equal_the_plain_decoder():
    """A predictor keeps the first block's products of the last embedding between clicks
    (Sam3D.decoder_image_cache): its clicks equal the plain decoder's, on that embedding, on a
    new one, and after new weights are loaded in place."""
    from fastsam3d_core.models import build_model
    from fastsam3d_core.session import ModelPredictor

    torch.manual_seed(11)
    model = build_model("fastsam3d").allow_random_weights()
    predictor = ModelPredictor(model)
    generator = np.random.default_rng(4)

    def plain(embedding, points, labels, mask):
        model.set_attention_backend("reference")
        with torch.inference_mode():
            logits, _ = model.decode(
                embedding,
                torch.as_tensor(points)[None],
                torch.as_tensor(labels)[None],
                None if mask is None else torch.as_tensor(mask)[None, None],
            )
        model.set_attention_backend("exact")
        return logits[0, 0].numpy()

    embeddings = [torch.randn(1, 384, 8, 8, 8) for _ in range(2)]
    caches = []
    for step in range(5):
        if step == 4:
            with torch.no_grad():
                model.mask_decoder.transformer.layers[
                    0
                ].cross_attn_token_to_image.k_proj.weight.mul_(1.5)
                model.prompt_encoder.mask_projection.bias.add_(0.3)
        embedding = embeddings[step // 3]
        points = (generator.random((step + 1, 3)) * 128).astype(np.float32)
        labels = (np.arange(step + 1) % 2).astype(np.int64)
        mask = None if step == 0 else generator.normal(size=(32, 32, 32)).astype(np.float32)
        ours = predictor.decode(embedding, points, labels, mask)
        caches.append(predictor._image_cache)
        expected = plain(embedding, points, labels, mask)
        assert np.abs(ours - expected).max() <= 1e-5 * np.abs(expected).max()
    assert caches[0] is not None and caches[0] is caches[1] is caches[2]  # one crop's clicks
    assert caches[3] is not caches[2] and caches[4] is not caches[3]  # new embedding, weights


def recorded_folds(monkeypatch) -> list:
    """The (attention module, direction) of every folded cross-attention from now on."""
    from fastsam3d_core.models.transformer import DecoderAttention

    calls: list = []
    for name in ("_token_to_image_folded", "_image_to_token_folded"):
        original = getattr(DecoderAttention, name)

        def recording(self, *args, _original=original, _name=name):
            calls.append((self, _name))
            return _original(self, *args)

        monkeypatch.setattr(DecoderAttention, name, recording)
    return calls


@pytest.mark.parametrize("tokens", [1, 8, 16])
@pytest.mark.parametrize("direction", ["token_to_image", "image_to_token", "projected_queries"])
def test_folded_cross_attention_equals_the_plain_one(tokens, direction, monkeypatch):
    """With few tokens the decoder's cross-attentions fold the image-side projections into the
    tokens' (DecoderAttention._folds): the same function as projecting the 512 image tokens,
    compared in float64 on the plain path, for both directions and for queries the first block
    takes already projected (the decoder's image cache)."""
    from fastsam3d_core.models.transformer import DecoderAttention

    torch.manual_seed(tokens)
    attention = DecoderAttention(384, 8, downsample_rate=2).eval()
    with torch.no_grad():
        for parameter in attention.parameters():
            parameter.normal_(0, 0.05)
    few, image = torch.randn(2, tokens, 384), torch.randn(2, 512, 384)
    plain = DecoderAttention(384, 8, downsample_rate=2).double()
    plain.load_state_dict(attention.state_dict())
    plain.plain = True
    folds = recorded_folds(monkeypatch)
    with torch.inference_mode():
        if direction == "token_to_image":
            ours = attention(few, image, image * 0.5)
            expected = plain(few.double(), image.double(), image.double() * 0.5)
        else:
            projected = {}
            if direction == "projected_queries":
                projected = {"q": linear(attention.q_proj, image)}
            ours = attention(None if projected else image, few, few * 0.5, projected)
            expected = plain(image.double(), few.double(), few.double() * 0.5)
    kind = "_token_to_image_folded" if direction == "token_to_image" else "_image_to_token_folded"
    assert folds == [(attention, kind)]
    assert float((ours.double() - expected).abs().max()) <= 1e-5 * float(expected.abs().max())


@pytest.mark.parametrize("points,folding", [(2, True), (10, True), (11, False)])
def test_a_decode_folds_the_cross_attentions_it_should(points, folding, monkeypatch):
    """In a click's decode (the image cache in use) block 1's two cross-attentions, the final
    one and block 0's image → token one (its queries from the cache) fold while the tokens
    (5 output tokens, the points, a padding point) are at most 16; never a self-attention nor
    block 0's token → image one (keys and values from the cache); with 11 points none."""
    from fastsam3d_core.models import build_model

    torch.manual_seed(5)
    model = build_model("fastsam3d")
    model.set_attention_backend("exact")
    embedding = torch.randn(1, 384, 8, 8, 8)
    generator = torch.Generator().manual_seed(points)
    clicks = torch.rand(1, points, 3, generator=generator) * 128
    labels = (torch.arange(points) % 2)[None]
    folds = recorded_folds(monkeypatch)
    with torch.inference_mode():
        cache = model.decoder_image_cache(embedding)
        model.decode(embedding, clicks, labels, torch.randn(1, 1, 32, 32, 32), image_cache=cache)
    transformer = model.mask_decoder.transformer
    first, second = transformer.layers
    expected = [
        (first.cross_attn_image_to_token, "_image_to_token_folded"),
        (second.cross_attn_token_to_image, "_token_to_image_folded"),
        (second.cross_attn_image_to_token, "_image_to_token_folded"),
        (transformer.final_attn_token_to_image, "_token_to_image_folded"),
    ]
    assert folds == (expected if folding else [])


def test_cross_attention_with_many_tokens_is_not_folded():
    """Beyond the share of the internal width where folding pays (16 tokens of 8 heads, 192
    wide), and under gradients, the image tokens are projected as in the plain path."""
    from fastsam3d_core.models.transformer import DecoderAttention

    attention = DecoderAttention(384, 8, downsample_rate=2)
    image = torch.randn(1, 512, 384)
    with torch.inference_mode():
        assert attention._folds(torch.randn(1, 16, 384), image)
        assert not attention._folds(torch.randn(1, 17, 384), image)
        assert not attention._folds(image, torch.randn(1, 8, 384))
    with torch.enable_grad():
        assert not attention._folds(torch.randn(1, 8, 384), image)
