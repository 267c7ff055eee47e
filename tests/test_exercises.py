"""Every teaching page and notebook ends with exercises ("predict, then run"), each answer folded away in
<details>, and every number an answer states in bold is one its checking code asserts.

The checking code runs elsewhere: a page's python blocks (those inside <details> too) in tests/test_docs.py,
a notebook's cells in tests/test_notebooks.py. This test ties the prose to that code: an answer that says
**2,873** must have 2873 (or 2_873) as a literal in the code that checks it, so the number a student reads
is the number the suite computes. A percentage may appear as itself or as a fraction (7% or 0.07).
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
TEACHING = ["architecture.md", "cost.md", "training.md", "data.md", "attention.md", "checkpoints.md"]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
HEADING = "## Exercises: predict, then run"
ANSWER = re.compile(r"<details><summary>Answer</summary>\n(.*?)</details>", re.S)
BOLD_NUMBER = re.compile(r"\*\*(\d[\d,]*(?:\.\d+)?)(%?)\*\*")
LITERAL = re.compile(r"(?<![\w.])\d[\d_]*(?:\.\d+)?(?:e-?\d+)?(?![\w.])")
PYTHON = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def literals(code: str) -> set[float]:
    return {float(x.replace("_", "")) for x in LITERAL.findall(code)}


def stated(answer_prose: str) -> list[tuple[str, set[float]]]:
    """(the bold number as written, the values the checking code may hold it as)."""
    out = []
    for digits, percent in BOLD_NUMBER.findall(answer_prose):
        value = float(digits.replace(",", ""))
        out.append((digits + percent, {value, round(value / 100, 10)} if percent else {value}))
    return out


def check_answers(where: str, answers: list[tuple[str, str]]) -> None:
    """answers: (answer prose, its checking code). At least two exercises, each checked by an assert."""
    assert len(answers) >= 2, f"{where}: at least two exercises"
    for i, (prose, code) in enumerate(answers, 1):
        assert "assert" in code, f"{where}, answer {i}: no assert checks it"
        have = literals(code)
        for written, values in stated(prose):
            assert values & have, f"{where}, answer {i}: **{written}** is not asserted by its checking code"


@pytest.mark.parametrize("name", TEACHING)
def test_teaching_pages_end_with_checked_exercises(name):
    text = (REPO / "docs" / name).read_text()
    assert HEADING in text, f"docs/{name}: no '{HEADING}' section"
    exercises = text[text.index(HEADING):]
    assert "\n## " not in exercises[len(HEADING):], f"docs/{name}: the exercises are not the last section"
    answers = [(PYTHON.sub("", a), "\n".join(PYTHON.findall(a))) for a in ANSWER.findall(exercises)]
    check_answers(f"docs/{name}", answers)
    assert exercises.count("<details>") == len(answers), f"docs/{name}: an answer not in the form of the others"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_end_with_checked_exercises(path):
    cells = nbformat.read(path, as_version=4).cells
    starts = [i for i, c in enumerate(cells) if c.cell_type == "markdown" and HEADING in c.source]
    assert len(starts) == 1, f"{path.name}: one '{HEADING}' section"
    answers = []
    for i in range(starts[0], len(cells)):
        cell = cells[i]
        if cell.cell_type == "markdown" and "<details>" in cell.source:
            (prose,) = ANSWER.findall(cell.source)
            following = cells[i + 1] if i + 1 < len(cells) else None
            assert following is not None and following.cell_type == "code", f"{path.name}: an answer with no check"
            answers.append((prose, following.source))
    check_answers(path.name, answers)
    assert not any(c.cell_type == "markdown" and c.source.startswith("## ") for c in cells[starts[0] + 1:]), \
        f"{path.name}: the exercises are not the last section"


def test_the_cross_check_can_fail():
    """An answer whose bold number its code does not assert is caught; a percentage may be a fraction."""
    with pytest.raises(AssertionError, match=r"\*\*2,874\*\*"):
        check_answers("p", [("**2,874** images", "assert n == 2_873"), ("**7%**", "assert x == 0.07")])
    check_answers("p", [("**2,873** images", "assert n == 2_873"), ("**7%**", "assert x == 0.07")])


def test_stem_lesson_quotes_results_md():
    """Notebook 02's conv-vs-patch table is docs/results.md's measured CPU comparison, number for number."""
    results = (REPO / "docs" / "results.md").read_text()
    nb = nbformat.read(REPO / "notebooks" / "02_train_on_a_laptop.ipynb", as_version=4)
    (table,) = [c.source for c in nb.cells if c.cell_type == "markdown" and "| stem |" in c.source]
    rows = [line for line in table.splitlines() if line.startswith("| patch") or line.startswith("| conv")]
    assert len(rows) == 2
    for row in rows:
        for number in re.findall(r"\d[\d,]*(?:\.\d+)?%?", row.split("|", 2)[2]):
            if number not in ("3", "8"):  # "3x3", "8x8" describe the stem
                assert number in results, f"notebook 02 quotes {number}, which docs/results.md does not say"
