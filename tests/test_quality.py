"""ruff and mypy (strict on the package) run as part of the suite, so CI enforces them."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.timeout(300)


def _tool(name: str) -> str:
    found = shutil.which(name, path=str(ROOT / ".venv" / "bin")) or shutil.which(
        name, path=str(__import__("pathlib").Path(sys.executable).parent)
    )
    if found is None:
        pytest.skip(f"{name} is not installed (pip install -e '.[dev]')")
    return found


@pytest.mark.parametrize(
    # No cache: ruff's cache does not see a change of layout (where a module is found).
    "args",
    [["check", "--no-cache", "."], ["format", "--no-cache", "--check", "."]],
    ids=["lint", "format"],
)
def test_ruff(args):
    out = subprocess.run([_tool("ruff"), *args], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_mypy_strict():
    out = subprocess.run([_tool("mypy")], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
