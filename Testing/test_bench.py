"""``fastsam3d bench``: it runs on a tiny configuration and writes a complete JSON report.

Speed itself is never asserted here (benchmarks measure it); these tests check that the suite
runs, measures every part for every configuration, and compares with the reference path.
"""

from __future__ import annotations

import json
import math
import statistics

import pytest
import torch
from conftest import GOLDEN_DIR, SHARED_DATA_DIR, invoke_cli
from typer.testing import CliRunner

from fastsam3d_core import build_model
from fastsam3d_core.benchmark import PARTS, BenchSettings, format_table, run_suite

runner = CliRunner()


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "bench.json"
    result = invoke_cli(["bench", "--quick", "--json", str(path)])
    assert result.exit_code == 0, result.output
    return result.output, json.loads(path.read_text())


def test_quick_bench_writes_every_field(quick_report):
    _, report = quick_report
    assert {"machine", "settings", "load_average_1_5_15", "results"} <= set(report)
    assert report["machine"]["torch_threads"] >= 1
    assert any(key.startswith("matmul_") and value > 0 for key, value in report["machine"].items())
    rows = report["results"]
    assert [(r["model"], r["backend"], r["precision"]) for r in rows] == [
        ("fastsam3d", "reference", "float32"),
        ("fastsam3d", "exact", "float32"),
    ]
    for row in rows:
        assert row["device"] == "cpu"
        for part in PARTS:
            samples = row[f"{part}_samples_s"]
            assert samples and all(s > 0 for s in samples)
            assert row[f"{part}_s"] == pytest.approx(statistics.median(samples))
        assert row["encoder_peak_mb"] > 0 and row["decoder_peak_mb"] > 0
        assert row["click_new_crop_s"] > 0
    assert rows[0]["speedup"] == {}
    for part in PARTS:
        expected = rows[0][f"{part}_s"] / rows[1][f"{part}_s"]
        assert rows[1]["speedup"][part] == pytest.approx(expected)
    expected = rows[0]["click_new_crop_s"] / rows[1]["click_s"]
    assert rows[1]["speedup"]["click_vs_reference_new_crop"] == pytest.approx(expected)


def test_quick_bench_prints_a_table_with_ratios(quick_report):
    output, report = quick_report
    assert "(reference)" in output and "speed-up enc/dec/click" in output
    assert format_table(report).splitlines()[0] in output


def test_bench_counts_flops_and_reports_agreement():
    settings = BenchSettings(
        models=["fastsam3d"],
        precisions=["float32", "bfloat16"],
        repeats=1,
        warmup=0,
        volume_shape=(40, 40, 30),
        clicks=1,
        new_crop_clicks=1,
        matmul_size=256,
    )
    report = run_suite(settings, echo=lambda _: None)
    rows = {(r["backend"], r["precision"]): r for r in report["results"]}
    assert set(rows) == {("reference", "float32"), ("exact", "float32"), ("exact", "bfloat16")}
    # FastSAM3D's encoder has no padding to skip: both paths count about 49.6 G (model.md §6.3); the
    # plain bias multiplies the queries with whole tables, a little more.
    reference, exact = rows["reference", "float32"], rows["exact", "float32"]
    assert exact["encoder_gflops"] == pytest.approx(49.6, rel=0.01)
    assert exact["encoder_gflops"] == pytest.approx(reference["encoder_gflops"], rel=0.005)
    assert 0 < exact["decoder_gflops"] < 3
    bf16 = rows["exact", "bfloat16"]
    (agreement,) = bf16["agreement"]
    assert agreement["source"] == "bench" and agreement["precision"] == "bfloat16"
    assert 0 < agreement["embedding_rel_error"] < 0.2
    assert 0.5 < agreement["equal_voxels"] <= 1 and 0 <= agreement["dice"] <= 1
    assert bf16["encoder_gflops"] == exact["encoder_gflops"]  # counted once, in float32
    expected = exact["encoder_s"] / bf16["encoder_s"]
    assert bf16["speedup_vs_float32"]["encoder"] == pytest.approx(expected)
    assert rows["exact", "float32"]["agreement"] == []
    assert "agreement with float32, bench:" in format_table(report)
    assert not any(math.isnan(r["click_s"]) for r in rows.values())


def test_bench_measures_agreement_on_golden_scenarios_and_scans(golden_data, tmp_path):
    """The command line's --golden and --scan: each reduced-precision row is compared with
    float32 on the golden scenarios and on every scan (read once for all rows)."""
    scans = [
        f"{SHARED_DATA_DIR}/totalseg_ct/example_ct_3mm.nii.gz,"
        f"{SHARED_DATA_DIR}/totalseg_ct/example_seg_3mm.nii.gz,5",
        f"{SHARED_DATA_DIR}/totalseg_ct/aorta_ct.nii.gz,"
        f"{SHARED_DATA_DIR}/totalseg_ct/aorta_label.nii.gz",
    ]
    path = tmp_path / "bench.json"
    arguments = ["bench", "--quick", "--backend", "exact", "--json", str(path)]
    arguments += ["--precision", "float32", "--precision", "int8", "--golden", str(GOLDEN_DIR)]
    result = invoke_cli(arguments + [option for scan in scans for option in ("--scan", scan)])
    assert result.exit_code == 0, result.output
    rows = {row["precision"]: row for row in json.loads(path.read_text())["results"]}
    assert rows["float32"]["agreement"] == []
    agreement = rows["int8"]["agreement"]
    sources = [entry["source"] for entry in agreement]
    assert sources == ["bench", "golden fastsam3d", "example_ct_3mm label 5", "aorta_ct"]
    for entry in agreement:
        assert entry["precision"] == "int8"
        error = entry["embedding_rel_error"]
        assert error is None if entry["source"] in sources[2:] else 0 < error < 0.2
        assert 0.9 < entry["dice"] <= 1 and 0.9 < entry["equal_voxels"] <= 1
    assert "golden fastsam3d" in result.output and "aorta_ct" in result.output


@pytest.mark.parametrize(
    "arguments,message",
    [
        (["--precision", "float64"], "float64"),
        (["--scan", "a.nii,b.nii"], "needs --golden"),
        (["--volume", "12x3"], "12x3"),
        (["--backend", "x"], "'x'"),
    ],
)
def test_bench_rejects_bad_options(arguments, message):
    result = invoke_cli(["bench", "--quick", *arguments])
    assert result.exit_code == 2
    assert message in result.output


def test_fast_decoder_equals_plain_decoder_for_batches_and_multimask():
    torch.manual_seed(7)
    model = build_model("fastsam3d")
    embedding = torch.randn(1, 384, 8, 8, 8)
    points = torch.tensor([[[10.0, 20.0, 30.0]], [[100.0, 64.0, 3.0]]])
    labels = torch.tensor([[1], [0]])
    masks = torch.randn(2, 1, 32, 32, 32)
    with torch.inference_mode():
        for multimask in (False, True):
            fast = model.decode(embedding, points, labels, masks, multimask=multimask)
            model.set_attention_backend("reference")
            plain = model.decode(embedding, points, labels, masks, multimask=multimask)
            model.set_attention_backend("exact")
            for ours, theirs in zip(fast, plain):
                scale = theirs.abs().max()
                assert (ours - theirs).abs().max() <= 1e-5 * scale
