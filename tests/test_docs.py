"""The documentation keeps up with the code: hooks, public API, config keys, a clean build.

Adding a hook, a public name, a config key or a default plugin without documenting it
fails here (the datasette ``tests/test_docs.py`` model).
"""

from __future__ import annotations

import ast
import inspect
import re
import subprocess
import sys

import pytest

import flask_execute
from flask_execute import hookspecs, manager
from flask_execute.manager import DEFAULT_PLUGINS, PluginManager
from tests.helpers import ROOT

DOCS = ROOT / "docs"

HOOKS = sorted(
    name
    for name, obj in vars(hookspecs).items()
    if name.startswith("flask_execute_") and inspect.isfunction(obj)
)


def _read(page: str) -> str:
    return (DOCS / page).read_text(encoding="utf-8")


def _directive_targets(page: str, directives: str) -> list[str]:
    """Targets of ``.. <directive>:: target`` lines of ``page``, in order."""
    pattern = rf"^\.\. (?:py:)?(?:{directives})::\s*(\S+)\s*$"
    return re.findall(pattern, _read(page), flags=re.MULTILINE)


HOOKS_DOCUMENTED = _directive_targets("hooks.rst", "autofunction")


def test_hook_names_are_found():
    assert len(HOOKS) >= 10, HOOKS


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_in_the_hook_reference(hook):
    target = f"flask_execute.hookspecs.{hook}"
    assert target in HOOKS_DOCUMENTED, (
        f"{hook} is not documented: add '.. autofunction:: {target}' to docs/hooks.rst"
    )


def test_hook_reference_names_only_existing_hooks_once():
    documented = [t.removeprefix("flask_execute.hookspecs.") for t in HOOKS_DOCUMENTED]
    assert sorted(set(documented) - set(HOOKS)) == [], "docs/hooks.rst names unknown hooks"
    duplicates = sorted({name for name in documented if documented.count(name) > 1})
    assert duplicates == [], "docs/hooks.rst documents a hook twice"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_has_a_call_method_on_the_plugin_manager(hook):
    source = inspect.getsource(manager)
    assert f"self.hook.{hook}(" in source, (
        f"{hook} has no typed call method on flask_execute.manager.PluginManager"
    )


API_DOCUMENTED = {
    target.removeprefix("flask_execute.")
    for target in _directive_targets(
        "api.rst", "autoclass|autoexception|autofunction|autodata|class|exception|data|function"
    )
}


@pytest.mark.parametrize("name", flask_execute.__all__)
def test_public_name_is_in_the_api_reference(name):
    assert name in API_DOCUMENTED, f"flask_execute.{name} is not documented in docs/api.rst"


CONFIG_DOCUMENTED = set(_directive_targets("configuration.rst", "data"))


@pytest.mark.parametrize("key", sorted(PluginManager(load_entry_points=False).config_keys()))
def test_config_key_is_documented(key):
    assert key in CONFIG_DOCUMENTED, (
        f"{key} is not documented: add '.. py:data:: {key}' to docs/configuration.rst"
    )


@pytest.mark.parametrize("name", [name for name, _module in DEFAULT_PLUGINS])
def test_default_plugin_is_listed(name):
    assert f"``{name}``" in _read("plugins.rst"), f"default plugin {name!r} not in plugins.rst"


def _test_names() -> set[str]:
    names = set()
    for path in (ROOT / "tests").glob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                names.add(node.name)
    return names


TEST_NAMES = _test_names()


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_has_a_test(hook):
    wanted = "test_hook_" + hook.removeprefix("flask_execute_")
    assert wanted in TEST_NAMES, (
        f"{hook} has no test: add a test named {wanted} (tests/test_hooks.py) that uses it "
        "from a plugin"
    )


@pytest.fixture(scope="module")
def html(tmp_path_factory):
    """The documentation built once with ``-W``: (sphinx's output, the HTML folder)."""
    pytest.importorskip("sphinx", reason="sphinx is not installed (pip install -e '.[dev]')")
    tmp_path = tmp_path_factory.mktemp("docs")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-q",
            "-b",
            "html",
            "-d",
            str(tmp_path / "doctrees"),
            str(DOCS),
            str(tmp_path / "html"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )
    return out, tmp_path / "html"


@pytest.mark.timeout(300)
def test_sphinx_build_has_no_warnings(html):
    out, _folder = html
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.timeout(300)
@pytest.mark.parametrize("hook", HOOKS)
def test_hook_reference_shows_the_exact_signature(html, hook):
    _out, folder = html
    page = (folder / "hooks.html").read_text(encoding="utf-8")
    found = re.search(rf'<dt [^>]*id="flask_execute\.hookspecs\.{hook}">(.*?)</dt>', page, re.S)
    assert found, f"{hook} is not rendered in the hook reference"
    params = re.findall(r'<em class="sig-param">(.*?)</em>', found.group(1), re.S)
    shown = [re.sub(r"<[^>]+>", "", p).split(":")[0].strip() for p in params]
    assert shown == list(inspect.signature(getattr(hookspecs, hook)).parameters), shown
