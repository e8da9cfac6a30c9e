"""A Flask app that does not use flask_execute: `flask celery` must say how to fix it."""

from __future__ import annotations

from flask import Flask

app = Flask(__name__)
