"""docs/model.md holds what the code cites: every ``model.md §N`` in the code is a numbered
section there, and every ``item N`` or ``step N`` cited with it is a numbered entry of it."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODEL_DOC = REPO / "docs" / "model.md"
# Where code lives (build/ and virtual environments beside them are not looked at).
CODE_FOLDERS = (
    "fastsam3d_core",
    "fastsam3d_mrml",
    "fastsam3d_web",
    "FastSAM3DSlicer",
    "client",
    "Testing",
    "benchmarks",
    "Utilities",
)
# A citation: "model.md", then up to the closing parenthesis or the end of the sentence (a
# citation may wrap onto the next line of a comment or docstring, and name several sections).
CITATION = re.compile(r"model\.md((?:[^)\n.]|\.\d|\n[ \t]*#?)*)")
SECTION = re.compile(r"§(\d+(?:\.\d+)?)((?:,?[\s#]+(?:items?|steps?)\s+\d+[a-z]?)*)")
ENTRY = re.compile(r"(?:items?|steps?)\s+(\d+)([a-z]?)")
# Section headings: "## 0. Title", "### 3.1 Title".
HEADING = re.compile(r"^#{2,4} (\d+(?:\.\d+)?)\.? ", re.MULTILINE)


def cited_sections(text: str) -> list[tuple[str, str, str]]:
    """(section, entry number, entry letter) for every section cited after ``model.md`` in
    ``text``; entry number and letter are empty where only the section is named."""
    citations = []
    for citation in CITATION.findall(text):
        for section, entries in SECTION.findall(citation):
            citations.append((section, "", ""))
            citations += [(section, number, letter) for number, letter in ENTRY.findall(entries)]
    return citations


def code_citations() -> dict[tuple[str, str, str], list[str]]:
    """Every citation of model.md in the repository's Python files, with where it is."""
    found: dict[tuple[str, str, str], list[str]] = {}
    for folder in CODE_FOLDERS:
        for path in sorted((REPO / folder).rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            for citation in cited_sections(text):
                found.setdefault(citation, []).append(str(path.relative_to(REPO)))
    return found


def model_doc_sections(text: str) -> dict[str, str]:
    """Each numbered section of model.md and its text up to the next numbered heading."""
    matches = list(HEADING.finditer(text))
    return {
        match.group(1): text[match.end() : next_match.start() if next_match else len(text)]
        for match, next_match in zip(matches, [*matches[1:], None])
    }


def has_entry(section_text: str, number: str, letter: str) -> bool:
    """Whether a section has a numbered list entry ``number.`` (and a sub-entry ``letter.``
    after it)."""
    entry = re.search(rf"^\s*(?:- )?{number}\. ", section_text, re.MULTILINE)
    if not entry or not letter:
        return bool(entry)
    return bool(re.search(rf"^\s*- {letter}\. ", section_text[entry.end() :], re.MULTILINE))


def missing_citations(doc_text: str, citations: dict[tuple[str, str, str], list[str]]) -> list:
    sections = model_doc_sections(doc_text)
    missing = []
    for (section, number, letter), places in sorted(citations.items()):
        if section not in sections:
            missing.append((f"§{section}", places))
        elif number and not has_entry(sections[section], number, letter):
            missing.append((f"§{section} item/step {number}{letter}", places))
    return missing


def test_every_section_the_code_cites_is_in_model_md():
    citations = code_citations()
    # The code cites at least these (comments of the models, attention, protocol, crop).
    assert {("0", "", ""), ("3.1", "5", "c"), ("4.1", "", "")} <= set(citations)
    missing = missing_citations(MODEL_DOC.read_text(encoding="utf-8"), citations)
    assert not missing, f"cited in the code, not in docs/model.md: {missing}"


def test_model_md_numbers_its_sections_as_the_citations_expect():
    """Sections 0 to 8 with the subsections the code and the other pages refer to."""
    sections = model_doc_sections(MODEL_DOC.read_text(encoding="utf-8"))
    expected = {"0", "7", "8"} | {
        f"{major}.{minor}"
        for major, last in ((1, 3), (2, 4), (3, 4), (4, 3), (5, 8), (6, 3))
        for minor in range(1, last + 1)
    }
    assert expected <= set(sections), sorted(expected - set(sections))


def test_citations_are_read_across_lines_and_lists():
    text = (
        "# bias (model.md §0\n    # item 8, §3.1 step 5c); crop (model.md §4.1 3a) and\n"
        '"""(model.md §2.2)."""  paper §2.3 is not ours\n'
    )
    assert cited_sections(text) == [
        ("0", "", ""),
        ("0", "8", ""),
        ("3.1", "", ""),
        ("3.1", "5", "c"),
        ("4.1", "", ""),
        ("2.2", "", ""),
    ]


def test_a_missing_section_or_step_is_reported():
    doc = "## 0. First\n\n1. one\n\n### 3.1 Encoder\n\n5. attention\n   - c. bias\n"
    citations = {
        ("0", "", ""): ["a.py"],
        ("0", "2", ""): ["b.py"],
        ("3.1", "5", "c"): ["c.py"],
        ("3.1", "5", "d"): ["d.py"],
        ("9", "", ""): ["e.py"],
    }
    assert missing_citations(doc, citations) == [
        ("§0 item/step 2", ["b.py"]),
        ("§3.1 item/step 5d", ["d.py"]),
        ("§9", ["e.py"]),
    ]
