"""A web page that starts a job on a Celery worker and shows its progress live.

Run it with ``bash examples/run.sh web`` (or ``flask --app examples/web.py run``, with
flask_execute installed) and open http://127.0.0.1:5000/. The first job starts a local
worker (Redis at localhost:6379 if it answers, else a filesystem broker under
``instance/``); the page follows the job through the status endpoint with the
blueprint's ``watch.js``: a progress bar, the result, and a Cancel button.
``/?polling=1`` follows it by polling the status instead of server-sent events.

Set ``CELERY_BROKER_URL`` (and ``CELERY_LOG_DIR``) in the environment to use another
broker or log folder; the worker reads the same variables when it loads this file.
"""

from __future__ import annotations

import os
import time

from flask import Flask, render_template_string, request, url_for

from flask_execute import Celery, current_task

app = Flask(__name__)
app.config.update(
    SECRET_KEY="change-me: signs the functions sent to the workers and the status URLs",
    CELERY_WORKERS=1,  # one local worker, started on the first submit()
    CELERY_FLOWER=False,  # no monitoring web app for this example
    CELERY_START_TIMEOUT=60,  # generous: the machine may be busy
)
for key in ("CELERY_BROKER_URL", "CELERY_LOG_DIR"):
    if os.environ.get(key):
        app.config[key] = os.environ[key]
celery = Celery(app)
app.register_blueprint(celery.blueprint(), url_prefix="/tasks")

#: Seconds each step of a job takes.
STEP = 0.25


def count(steps: int) -> str:
    """The job: ``steps`` steps of work, reporting progress after each one."""
    for step in range(1, steps + 1):
        if current_task.cancelled:  # the Cancel button: stop between two steps
            return f"cancelled after {step - 1} steps"
        time.sleep(STEP)  # some work
        current_task.progress(step, steps)
    return f"counted {steps} steps"


@app.post("/jobs")
def start_job() -> dict[str, str]:
    steps = max(1, min(request.form.get("steps", 12, type=int), 1000))
    future = celery.submit(count, steps)
    return {"status": url_for("flask_execute.status", token=future.token)}


@app.get("/")
def page() -> str:
    return render_template_string(
        PAGE,
        polling=request.args.get("polling") == "1",
        steps=request.args.get("steps", 12, type=int),
    )


PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <link rel="icon" href="data:,">
  <title>flask_execute: a job with a progress bar</title>
</head>
<body>
  <h1>A job with a progress bar</h1>
  <form id="job">
    <label>Steps <input id="steps" name="steps" type="number" min="1" max="1000"
                        value="{{ steps }}"></label>
    <button id="start" type="submit">Start</button>
    <button id="cancel" type="button" disabled>Cancel</button>
  </form>
  <p>
    <progress id="bar" max="1" value="0"></progress>
    <span id="percent">0 %</span>
    <span id="state">not started</span>
  </p>
  <p>Result: <output id="result"></output></p>
  <p>Following the job by {{ "polling" if polling else "server-sent events" }}
     (<a href="{{ url_for('page', polling=0 if polling else 1) }}">switch</a>).</p>

  <script src="{{ url_for('flask_execute.script') }}"></script>
  <script>
    "use strict";
    var polling = {{ polling|tojson }};
    var form = document.getElementById("job");
    var startButton = document.getElementById("start");
    var cancelButton = document.getElementById("cancel");
    var bar = document.getElementById("bar");
    var percent = document.getElementById("percent");
    var stateText = document.getElementById("state");
    var result = document.getElementById("result");
    var job = null;
    // What the page saw, for anyone curious (the browser tests read these).
    window.seenFractions = [];
    window.outcomes = [];
    window.statusUrl = null;

    function show(fraction) {
      bar.value = fraction;
      percent.textContent = Math.round(fraction * 100) + " %";
    }

    function onProgress(status) {
      stateText.textContent = status.state;
      if (status.progress && status.progress.fraction !== null) {
        window.seenFractions.push(status.progress.fraction);
        show(status.progress.fraction);
      }
    }

    function onDone(status) {
      window.outcomes.push(status.state);
      job = null;
      startButton.disabled = false;
      cancelButton.disabled = true;
      stateText.textContent = status.state === "REVOKED" ? "cancelled" : status.state;
      if (status.state === "SUCCESS") {
        show(1);
        result.textContent = status.result;
      } else if (status.error) {
        result.textContent = status.error.type + ": " + status.error.message;
      }
    }

    function onError(error) {
      stateText.textContent = "error: " + error.message;
    }

    form.addEventListener("submit", function (event) {
      event.preventDefault();
      startButton.disabled = true;
      window.seenFractions = [];
      window.outcomes = [];
      show(0);
      result.textContent = "";
      stateText.textContent = "starting";
      fetch("{{ url_for('start_job') }}", { method: "POST", body: new FormData(form) })
        .then(function (response) {
          if (!response.ok) {
            throw new Error("HTTP " + response.status);
          }
          return response.json();
        })
        .then(function (body) {
          window.statusUrl = body.status;
          cancelButton.disabled = false;
          job = flaskExecute.watch(body.status, {
            onProgress: onProgress,
            onDone: onDone,
            onError: onError,
            polling: polling,
            interval: 250,
          });
        })
        .catch(function (error) {
          startButton.disabled = false;
          onError(error);
        });
    });

    cancelButton.addEventListener("click", function () {
      if (job) {
        cancelButton.disabled = true;
        stateText.textContent = "cancelling";
        job.cancel().catch(onError);  // the watch then reports the cancelled job
      }
    });
  </script>
</body>
</html>
"""
