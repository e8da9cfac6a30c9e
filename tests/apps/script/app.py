"""An app run as `python app.py`: its functions live in __main__."""

import os
import sys

from flask import Flask

from flask_execute import Celery

app = Flask(__name__)
app.config.update(
    SECRET_KEY="script-secret-key-of-32-bytes-or-more",
    CELERY_BROKER_URL=os.environ["FLASK_EXECUTE_TEST_BROKER"],
    CELERY_START_LOCAL_WORKERS=False,
    CELERY_FLOWER=False,
    CELERY_SCHEDULER=False,
    CELERY_TASK_DEFAULT_QUEUE="script",
)
celery = Celery(app)


def square(x):
    return x * x


class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y


def norm(p):
    return (p.x**2 + p.y**2) ** 0.5


if __name__ == "__main__":
    from flask_execute.discovery import app_import_path

    print("PATH", app_import_path(app), flush=True)
    print("RESULT", celery.submit(square, 7).result(timeout=20), flush=True)
    print("RESULT", celery.submit(norm, Point(3, 4)).result(timeout=20), flush=True)
    print("RESULT", celery.map(square, [1], [2], [3]).result(timeout=20), flush=True)
    sys.exit(0)
