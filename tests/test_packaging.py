"""Packaging: a built wheel and the editable install both ship every default plugin.

The top-level ``plugins/`` folder is installed as ``flask_execute.plugins`` (through the
``flask_execute/plugins`` symlink); ``plugins`` itself must never be importable, also
when an editable install puts the checkout on ``sys.path``. mypy must find the package's
types in both installs. Everything runs offline: the wheel is built with the
environment's setuptools (``--no-isolation``) and installed with ``--no-deps`` into a
target folder that a fresh interpreter puts first on its path, from a working directory
outside the repository.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname

import pytest

import flask_execute
from flask_execute.manager import DEFAULT_PLUGINS
from tests import helpers

#: What the fresh interpreter reports: where flask_execute and each default plugin came
#: from, and whether a top-level ``plugins`` package can be imported.
PROBE = textwrap.dedent("""
    import importlib, json, sys
    from flask_execute.manager import DEFAULT_PLUGINS
    import flask_execute
    found = {}
    for name, module in DEFAULT_PLUGINS:
        try:
            found[module] = importlib.import_module(module).__file__
        except ImportError as exc:
            found[module] = "ImportError: " + str(exc)
    try:
        import plugins
        top_level = getattr(plugins, "__file__", None) or repr(plugins)
    except ModuleNotFoundError:
        top_level = None
    except ImportError as exc:  # plugins/__init__.py refuses any name but its own
        top_level = None if "import flask_execute.plugins" in str(exc) else repr(exc)
    print(json.dumps({
        "flask_execute": flask_execute.__file__,
        "declared": [module for _, module in DEFAULT_PLUGINS],
        "plugins": found,
        "top_level_plugins": top_level,
    }))
""")

#: What a wheel build needs from the source tree.
SOURCES = ("pyproject.toml", "README.rst", "LICENSE", "flask_execute", "plugins")


def _probe(env: dict[str, str], cwd: Path) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    report: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return report


def _check(report: dict[str, Any], package_dir: Path, plugins_dir: Path) -> None:
    """Every declared default plugin comes from ``plugins_dir``; no top-level ``plugins``."""
    assert Path(report["flask_execute"]).resolve().parent == package_dir.resolve()
    assert report["top_level_plugins"] is None, (
        f"`plugins` is importable as a top-level package: {report['top_level_plugins']}"
    )
    missing = {m: f for m, f in report["plugins"].items() if f.startswith("ImportError")}
    assert not missing, f"default plugins that do not import: {sorted(missing)}"
    for module, file in report["plugins"].items():
        # a plugin is a module of plugins/, or a package in it (plugins/services/)
        path = Path(file).resolve()
        assert plugins_dir.resolve() in (path.parent, path.parent.parent), (module, file)


def _clean_env(**extra: str) -> dict[str, str]:
    """The test environment without the repository on ``PYTHONPATH``."""
    env = helpers.test_env()
    env.pop("PYTHONPATH", None)
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build a wheel from a copy of the sources (the checkout's ``build/`` is shared)."""
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        path = helpers.ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, src / name)
    dist = tmp_path_factory.mktemp("dist")
    out = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), "."],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    (built,) = dist.glob("flask_execute-*.whl")
    (dist / "build.log").write_text(out.stdout + out.stderr, encoding="utf-8")
    return built


def test_version_is_the_projects_and_above_the_original() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    declared = tomllib.loads((helpers.ROOT / "pyproject.toml").read_text("utf-8"))
    # A stale flask_execute.egg-info in the checkout would answer here: reinstall.
    assert flask_execute.__version__ == declared["project"]["version"]
    # the original flask-execute is 0.1.6 on the package index; pip -U must pick us
    assert tuple(int(p) for p in flask_execute.__version__.split(".")[:3]) > (0, 1, 6)


def test_wheel_declares_its_license_without_setuptools_warnings(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as whl:
        (meta,) = [n for n in whl.namelist() if n.endswith(".dist-info/METADATA")]
        headers = whl.read(meta).decode()
        shipped = whl.namelist()
    assert "License-Expression: MIT" in headers.splitlines()
    assert "License-File: LICENSE" in headers.splitlines()
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in shipped)
    log = (wheel.parent / "build.log").read_text("utf-8")
    # what setuptools printed before PEP 639: "`project.license` as a TOML table is deprecated"
    warned = [line for line in log.splitlines() if "deprecated" in line.lower()]
    assert not warned, warned


def test_wheel_contents_map_plugins_into_the_package(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert "flask_execute/__init__.py" in names
    assert "flask_execute/py.typed" in names
    assert "flask_execute/plugins/__init__.py" in names
    assert not [n for n in names if n.startswith("plugins/")]
    assert "flask_execute/plugins/services/supervisor.py" in names  # a plugin's own modules
    shipped = {n[: -len(".py")].replace("/", ".") for n in names if n.endswith(".py")}
    shipped |= {module.removesuffix(".__init__") for module in shipped}
    missing = [module for _, module in DEFAULT_PLUGINS if module not in shipped]
    assert not missing, f"default plugins not in the wheel: {missing}"


@pytest.mark.timeout(300)
def test_wheel_install_imports_every_default_plugin(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    helpers.pip_install_target(wheel, site, "--no-index")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # PYTHONPATH comes before site-packages, and the editable finder sits after the
    # path finder, so this interpreter imports the wheel's copy.
    report = _probe(_clean_env(PYTHONPATH=str(site)), elsewhere)
    _check(report, site / "flask_execute", site / "flask_execute" / "plugins")


def test_editable_install_imports_every_default_plugin(tmp_path: Path) -> None:
    # Only site-packages: the checkout's own flask_execute.egg-info is on sys.path too.
    purelib = sysconfig.get_paths()["purelib"]
    found = [d for d in metadata.distributions(path=[purelib]) if d.name == "flask-execute"]
    if not found:
        pytest.skip(f"flask-execute is not installed in {purelib}")
    dist = found[0]
    direct_url = json.loads(dist.read_text("direct_url.json") or "{}")
    if not direct_url.get("dir_info", {}).get("editable"):
        pytest.skip("flask-execute is not installed in editable mode (pip install -e .)")
    source = Path(url2pathname(urlparse(direct_url["url"]).path))
    if source.resolve() != helpers.ROOT.resolve():
        pytest.skip(f"the editable install points at another checkout: {source}")
    report = _probe(_clean_env(), tmp_path)
    _check(report, helpers.ROOT / "flask_execute", helpers.ROOT / "plugins")


#: A user's module: mypy must see the package's own types, not ``Any``.
USER_CODE = textwrap.dedent("""
    from flask_execute import Celery, Future

    def add(x: int, y: int) -> int:
        return x + y

    celery = Celery()
    future = celery.submit(add, 1, 2)
    reveal_type(future)
    total: Future[int] = future
    wrong: str = future.result()
""")


def _venv(folder: Path) -> tuple[Path, Path]:
    """A bare virtual environment (no pip, no dependencies): its python and purelib."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    python = folder / "bin" / "python"
    out = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    )
    return python, Path(out.stdout.strip())


def _mypy_sees_the_types(python: Path, tmp_path: Path) -> None:
    """mypy, run for ``python``'s environment on a user's file, reads our annotations."""
    user = tmp_path / "user_code"
    user.mkdir()
    (user / "app.py").write_text(USER_CODE, encoding="utf-8")
    (user / "mypy.ini").write_text("[mypy]\n", encoding="utf-8")
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--python-executable", str(python),
         "--config-file", "mypy.ini", "--cache-dir", str(tmp_path / "mypy_cache"), "app.py"],
        cwd=user,
        capture_output=True,
        text=True,
        timeout=240,
    )  # fmt: skip
    report = out.stdout + out.stderr
    assert "Cannot find implementation or library stub" not in report, report
    # mypy 2 prints ``int``, older ones ``builtins.int``
    revealed = r'Revealed type is "flask_execute\.futures\.Future\[(builtins\.)?int\]"'
    assert re.search(revealed, report), report
    assert 'expression has type "int", variable has type "str"' in report, report


@pytest.mark.timeout(300)
def test_mypy_sees_the_types_of_an_installed_wheel(wheel: Path, tmp_path: Path) -> None:
    python, purelib = _venv(tmp_path / "venv")
    helpers.pip_install_target(wheel, purelib, "--no-index")
    _mypy_sees_the_types(python, tmp_path)


@pytest.mark.timeout(300)
def test_mypy_sees_the_types_of_an_editable_install(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in SOURCES:
        path = helpers.ROOT / name
        if path.is_dir():
            shutil.copytree(
                path, src / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            shutil.copy2(path, src / name)
    python, purelib = _venv(tmp_path / "venv")
    out = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "--no-deps", "--no-index", "--no-build-isolation", "--target", str(purelib),
         "--editable", str(src)],
        capture_output=True,
        text=True,
        timeout=150,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    _mypy_sees_the_types(python, tmp_path)
