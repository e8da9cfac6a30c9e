"""Typed futures: ``mypy --strict`` on tests/typecheck/sample.py reveals the types its
comments name, and reports exactly the errors they name (a type that regresses to
``Any`` fails both ways)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = Path("tests") / "typecheck" / "sample.py"
EXPECTED = re.compile(r"#\s*(revealed|error):\s*(.+?)\s*$")
REPORTED = re.compile(r"^(?P<path>[^:]+):(?P<line>\d+): (?P<kind>note|error): (?P<text>.*)$")


def expectations() -> tuple[dict[int, str], dict[int, str]]:
    revealed, errors = {}, {}
    for number, line in enumerate((ROOT / SAMPLE).read_text().splitlines(), 1):
        found = EXPECTED.search(line)
        if found:
            (revealed if found[1] == "revealed" else errors)[number] = found[2]
    return revealed, errors


@pytest.fixture(scope="module")
def reported() -> list[re.Match[str]]:
    # The project's mypy settings (pyproject.toml), strict, on the sample alone.
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-warn-unused-ignores", str(SAMPLE)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=170,
    )
    lines = [REPORTED.match(line) for line in done.stdout.splitlines()]
    assert done.returncode in (0, 1), done.stdout + done.stderr
    return [line for line in lines if line is not None]


def test_the_sample_expects_something():
    revealed, errors = expectations()
    assert len(revealed) >= 15 and len(errors) >= 4


def test_revealed_types(reported):
    revealed, _ = expectations()
    found = {}
    for line in reported:
        text = line["text"]
        if line["kind"] == "note" and text.startswith("Revealed type is "):
            found[int(line["line"])] = text.removeprefix("Revealed type is ").strip('"')
    assert found == revealed


def test_errors_are_exactly_the_expected_ones(reported):
    _, errors = expectations()
    found = {}
    for line in reported:
        if line["kind"] != "error":
            continue
        assert Path(line["path"]) == SAMPLE, line[0]  # the package itself checks clean
        code = re.search(r"\[([a-z-]+)\]$", line["text"])
        found[int(line["line"])] = code[1] if code else line["text"]
    assert found == errors
