"""What the README and docs/ promise: their Python examples run as written, their relative links
resolve, the README stays short with a layout table of every top-level folder, the packaged
example CT and its spleen point are what they say, and CI runs the README's test command with the
shared data."""

from __future__ import annotations

import filecmp
import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REQUIRE_SHARED_DATA, SHARED_DATA_DIR
from scipy import ndimage

from fastsam3d_core import build_model
from fastsam3d_core.examples import SPLEEN_LABEL, SPLEEN_POINT_RAS, example_ct_path
from fastsam3d_core.io import read_volume
from fastsam3d_core.weights.download import ENV_CACHE_DIR
from fastsam3d_core.weights.registry import WEIGHTS

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = REPO / "docs"
SERVING_DOC = DOCS / "serving.md"
CI_RUN = REPO / ".ci" / "run"
ATTRIBUTION = REPO / "fastsam3d_core" / "examples" / "ATTRIBUTION.md"
SHARED_CT = SHARED_DATA_DIR / "totalseg_ct" / "example_ct_3mm.nii.gz"
# TotalSegmentator's own multi-label prediction for the example CT, on its grid.
SHARED_SEG = SHARED_DATA_DIR / "totalseg_ct" / "example_seg_3mm.nii.gz"
needs_shared_scans = pytest.mark.skipif(
    not (SHARED_CT.is_file() and SHARED_SEG.is_file()),
    reason=f"shared example scans not found in {SHARED_CT.parent}",
)

PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
BASH_BLOCK = re.compile(r"^```bash\n(.*?)^```", re.MULTILINE | re.DOTALL)
# Blocks for 3D Slicer's Python console use the application's `slicer.util`, which exists only
# inside Slicer; the Slicer logic they call is tested in Testing/test_slicer_*.py.
SLICER_CONSOLE = re.compile(r"\bslicer\.util\.")
# Seconds per README block: a FastSAM3D encoder run and 20 decoder passes on a 2-core CPU, plus
# importing torch.
BLOCK_TIMEOUT_S = 300
# How far inside the spleen its point must be: a few voxels (3 mm) from every other structure.
SPLEEN_MARGIN_MM = 15.0
# The bound: a README a newcomer reads in five minutes.
README_MAX_LINES = 200
# Markdown links and images, [text](target) and ![alt](target); code blocks are removed first.
MARKDOWN_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCED_BLOCK = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`]*`")
HEADING = re.compile(r"^#{1,6} (.+?)\s*$", re.MULTILINE)


def readme_blocks(pattern: re.Pattern[str]) -> list[str]:
    """The contents of the README's fenced code blocks of one language, in order."""
    return pattern.findall(README.read_text(encoding="utf-8"))


def documentation_pages() -> list[Path]:
    """The README and every page of docs/."""
    return [README, *sorted(DOCS.glob("*.md"))]


def documented_blocks(pattern: re.Pattern[str]) -> list[tuple[Path, str]]:
    """Fenced code blocks of one language in the README and docs/, with the page of each."""
    return [
        (page, block)
        for page in documentation_pages()
        for block in pattern.findall(page.read_text(encoding="utf-8"))
    ]


@pytest.fixture(scope="module")
def seeded_weights_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A weights cache holding seeded FastSAM3D weights under the registry's file name.

    The real weights cannot be downloaded in tests. A cached file for which no hash is published
    (FastSAM3D's) or recorded by a first download is used as it is by ``resolve_weights``.
    """
    entry = WEIGHTS["fastsam3d"]
    assert entry.sha256 is None, "fastsam3d now has a published SHA-256: seeded weights fail it"
    cache = tmp_path_factory.mktemp("weights-cache")
    torch.manual_seed(0)
    model = build_model(entry.architecture)
    torch.save({"model_state_dict": model.state_dict()}, cache / entry.filename)
    return cache


@pytest.fixture(scope="module")
def seeded_text_cache(seeded_weights_cache: Path, clip_vocabulary_wheel: Path) -> Path:
    """The cache above, with a seeded CLIP text tower under the text weights' registry file name
    (no hash is published for it either) and CLIP's vocabulary wheel."""
    from safetensors.torch import save_file

    from fastsam3d_core.text import seeded_text_encoder
    from fastsam3d_core.text.text_weights import DEFAULT_TEXT_MODEL

    entry = WEIGHTS[DEFAULT_TEXT_MODEL]
    assert entry.sha256 is None, f"{entry.name} now has a published SHA-256: seeded weights fail it"
    shutil.copyfile(clip_vocabulary_wheel, seeded_weights_cache / clip_vocabulary_wheel.name)
    encoder = seeded_text_encoder(0, vocabulary=clip_vocabulary_wheel)
    state = {key: value.contiguous() for key, value in encoder.state_dict().items()}
    save_file(state, seeded_weights_cache / entry.filename)
    return seeded_weights_cache


def test_readme_python_examples_run(seeded_text_cache: Path, tmp_path: Path) -> None:
    """Every ```python block of the README and docs/ runs, as written, in a fresh interpreter."""
    blocks = documented_blocks(PYTHON_BLOCK)
    runnable = [(page, block) for page, block in blocks if not SLICER_CONSOLE.search(block)]
    assert len(runnable) >= 3, "the Python examples of the README and docs/ were not found"
    for page, block in blocks:
        compile(block, str(page), "exec")  # the Slicer console's blocks too
    environment = {**os.environ, ENV_CACHE_DIR: str(seeded_text_cache)}
    failures = []
    for number, (page, block) in enumerate(runnable, 1):
        run = subprocess.run(
            [sys.executable, "-c", block],
            cwd=tmp_path,
            env=environment,
            capture_output=True,
            text=True,
            timeout=BLOCK_TIMEOUT_S,
        )
        if run.returncode != 0:
            failures.append(
                f"block {number} of {page.name}:\n{block}--- exit {run.returncode}:\n{run.stderr}"
            )
    assert not failures, "Python examples failed:\n" + "\n".join(failures)


@needs_shared_scans
def test_packaged_example_ct_is_the_shared_scan_unmodified() -> None:
    assert filecmp.cmp(example_ct_path(), SHARED_CT, shallow=False)


def test_attribution_gives_the_packaged_file_sha256() -> None:
    digest = hashlib.sha256(example_ct_path().read_bytes()).hexdigest()
    assert f"SHA-256: `{digest}`" in ATTRIBUTION.read_text(encoding="utf-8")


@needs_shared_scans
def test_spleen_point_lies_deep_inside_the_spleen() -> None:
    ct, labels = read_volume(example_ct_path()), read_volume(SHARED_SEG)
    np.testing.assert_allclose(labels.ijk_to_ras, ct.ijk_to_ras, atol=1e-4)  # the same grid
    spleen = labels.array == SPLEEN_LABEL
    # Padded so that the space outside the scan counts as not spleen: the spleen runs past the
    # scan's first and last slices.
    depth_mm = ndimage.distance_transform_edt(np.pad(spleen, 1), sampling=labels.spacing)
    ijk = np.round(labels.ras_to_index(np.array(SPLEEN_POINT_RAS))).astype(int)
    assert labels.contains_index(ijk)
    assert depth_mm[tuple(ijk + 1)] >= SPLEEN_MARGIN_MM


def test_ci_runs_the_readme_test_command_and_requires_shared_data() -> None:
    test_commands = [block.strip() for block in readme_blocks(BASH_BLOCK) if "pytest" in block]
    assert len(test_commands) == 1
    lines = CI_RUN.read_text(encoding="utf-8").strip().splitlines()
    assert lines[-1] == test_commands[0]
    assert f"export {REQUIRE_SHARED_DATA}=1" in lines


@pytest.mark.parametrize("shared_present", [False, True])
def test_required_shared_data_stops_the_run_only_when_missing(
    tmp_path: Path, shared_present: bool
) -> None:
    """This suite's conftest in a checkout with or without ``../shared``, the variable set."""
    testing = tmp_path / "repository" / "Testing"
    testing.mkdir(parents=True)
    shutil.copy(Path(__file__).with_name("conftest.py"), testing)
    (testing / "test_nothing.py").write_text("def test_nothing():\n    pass\n", encoding="utf-8")
    if shared_present:
        for folder in ("golden", "data"):
            (tmp_path / "shared" / folder).mkdir(parents=True)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", str(testing)],
        cwd=testing.parent,
        env={**os.environ, REQUIRE_SHARED_DATA: "1"},
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT_S,
    )
    output = run.stdout + run.stderr
    if shared_present:
        assert run.returncode == 0, output
    else:
        assert run.returncode == pytest.ExitCode.USAGE_ERROR, output
        assert f"{tmp_path / 'shared' / 'golden'} and {tmp_path / 'shared' / 'data'}" in output


def test_the_client_install_line_is_the_client_distribution():
    """The documented torch-free client install (docs/serving.md) is one command that installs
    the client distribution in client/ (Testing/test_serving.py runs that command without torch,
    and Testing/test_packaging.py checks its dependencies)."""
    tomllib = pytest.importorskip("tomllib")
    page = SERVING_DOC.read_text(encoding="utf-8")
    found = re.search(r"`pip install \./(\w+)`", page)
    assert found, f"{SERVING_DOC.name} lost its client install line"
    project = tomllib.loads((REPO / found.group(1) / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["project"]["name"] == "fastsam3d-client"
    assert "torch" not in " ".join(project["project"].get("dependencies", []))


def heading_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, spaces to
    hyphens (``### 3.1 Image encoder`` -> ``31-image-encoder``)."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def page_anchors(page: Path) -> set[str]:
    text = FENCED_BLOCK.sub("", page.read_text(encoding="utf-8"))
    return {heading_anchor(heading) for heading in HEADING.findall(text)}


def relative_links(page: Path) -> list[str]:
    """Link targets of a Markdown page that are not web addresses, outside code."""
    text = INLINE_CODE.sub("", FENCED_BLOCK.sub("", page.read_text(encoding="utf-8")))
    return [
        target
        for target in MARKDOWN_LINK.findall(text)
        if not re.match(r"[a-z][a-z0-9+.-]*:", target, re.IGNORECASE)
    ]


def broken_links(page: Path) -> list[str]:
    """The relative links of ``page`` whose file, or heading after ``#``, does not exist."""
    broken = []
    for target in relative_links(page):
        path_part, _, anchor = target.partition("#")
        destination = (page.parent / path_part).resolve() if path_part else page
        if not destination.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and destination.suffix == ".md" and anchor not in page_anchors(destination):
            broken.append(f"{target} (no heading #{anchor} in {destination.name})")
    return broken


def test_every_relative_link_of_the_readme_and_docs_resolves():
    pages = documentation_pages()
    assert len(pages) > 5, "docs/ lost its pages"
    assert sum(len(relative_links(page)) for page in pages) > 20, "no links found: parser broken"
    broken = {page.name: broken_links(page) for page in pages}
    assert not {name: links for name, links in broken.items() if links}


def test_the_link_check_finds_a_missing_file_and_a_missing_heading(tmp_path: Path):
    (tmp_path / "there.md").write_text("# Title\n\n## 3.1 Image encoder\n", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](there.md#31-image-encoder) [web](https://example.org/x) `[code](gone.md)`\n"
        "[file](gone.md) [heading](there.md#nothing) [self](#title)\n# Title\n",
        encoding="utf-8",
    )
    assert broken_links(page) == [
        "gone.md (no such file)",
        "there.md#nothing (no heading #nothing in there.md)",
    ]


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) < README_MAX_LINES, f"README.md has {len(lines)} lines"


def tracked_top_level_entries() -> set[str]:
    """The checkout's top-level files and folders under version control, less dotfiles other
    than .ci/ and the README itself."""
    listed = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    entries = set()
    for path in listed.stdout.splitlines():
        top, separator, _ = path.partition("/")
        if top.startswith(".") and top != ".ci" or top == README.name:
            continue
        entries.add(top + "/" if separator else top)
    return entries


def test_readme_layout_table_names_every_top_level_folder():
    readme = README.read_text(encoding="utf-8")
    layout = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"^\| `([^`]+)` \|", layout, re.MULTILINE))
    missing = tracked_top_level_entries() - named
    assert not missing, f"README's layout table leaves out {sorted(missing)}"
