"""The example app (the README's main job) runs end to end and prints its results.

``examples/app.py`` runs as ``python app.py`` from its folder, exactly as
``examples/run.sh`` runs it, with its broker pointed at this test run's Redis database;
its local workers start on the first submit and stop with ``celery.stop()``.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from tests import helpers

EXAMPLES = helpers.ROOT / "examples"


@pytest.mark.timeout(180)
def test_example_app_prints_its_results(broker_url: str, tmp_path: Path) -> None:
    env = helpers.test_env(CELERY_BROKER_URL=broker_url, CELERY_LOG_DIR=str(tmp_path / "logs"))
    returncode, out, err = helpers.run_to_end([sys.executable, "app.py"], EXAMPLES, env, 150)
    assert returncode == 0, f"{out}\n{err}"
    lines = out.splitlines()
    assert f"broker: {broker_url}" in lines
    assert "submit: add(1, 2) = 3" in lines
    # its two local workers answered (the suite's own workers may share the broker)
    (listed,) = [line for line in lines if line.startswith("workers: [")]
    names = ast.literal_eval(listed.removeprefix("workers: "))
    assert {"app1", "app2"} <= {name.split("@")[0] for name in names}, out
    assert any(
        line.startswith("context: hello from the Flask app, example (worker pid ") for line in lines
    ), out
    assert "map: add(x, y=10) for x in 1, 2, 3 = [11, 12, 13]" in lines
    assert "lambda: 7 * 7 + 100 = 149" in lines
    assert "failure: divide(1, 0) raised ZeroDivisionError(division by zero)" in lines
    progress = [line for line in lines if line.startswith("progress: PROGRESS step ")]
    assert progress and progress[-1] == "progress: PROGRESS step 5 of 5", out
    assert "progress: finished after 5 steps" in lines
    assert lines[-1] == "stopped: local workers"
