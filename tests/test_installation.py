"""docs/installation.rst says what the README and the project say: the same commands,
scripts that exist, the distribution's own name, and a quickstart that uses only the
public API and keeps the ``__main__`` guard."""

from __future__ import annotations

import ast
import re

import flask_execute
from tests.helpers import ROOT

PAGE = (ROOT / "docs" / "installation.rst").read_text(encoding="utf-8")
README = (ROOT / "README.rst").read_text(encoding="utf-8")


def _commands(text: str) -> set[str]:
    return set(re.findall(r"^ {4}(bash \S+(?: \S+)*)$", text, flags=re.MULTILINE))


def test_the_pages_commands_are_the_readmes_and_their_scripts_exist():
    commands = _commands(PAGE)
    assert {"bash examples/run.sh", "bash tests/run.sh"} <= commands
    assert commands == _commands(README), "docs/installation.rst and README.rst differ"
    for command in commands:
        assert (ROOT / command.split()[1]).is_file(), command


def test_the_page_installs_this_distribution():
    name = flask_execute.__name__.replace("_", "-")
    assert f"pip install -U {name}" in PAGE
    assert re.search(r'^name = "flask-execute"$', (ROOT / "pyproject.toml").read_text(), re.M)


def test_the_quickstart_uses_the_public_api_and_the_main_guard():
    block = PAGE.split(".. code-block:: python", 1)[1].split("\nand run it", 1)[0]
    tree = ast.parse("\n".join(line[4:] for line in block.splitlines()))
    imported = [
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "flask_execute"
        for alias in node.names
    ]
    assert imported and set(imported) <= set(flask_execute.__all__)
    guards = [
        node
        for node in tree.body
        if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test)
    ]
    assert guards and "submit" in ast.unparse(guards[0]), "submit() outside the guard"
    outside = [n for n in tree.body if n not in guards]
    assert "submit" not in "".join(ast.unparse(n) for n in outside)
