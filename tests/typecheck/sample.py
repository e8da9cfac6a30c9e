"""Checked by tests/test_typing.py with ``mypy --strict``; never imported or run.

A line whose comment names what is revealed must reveal that type; a line whose
comment names an error must be reported with that error code, and no other line may be.
"""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Generator

from flask import Flask
from typing_extensions import reveal_type

from flask_execute import Celery

celery = Celery(Flask(__name__))


def add(x: int, y: int) -> int:
    return x + y


def tag(x: int, *, queue: str) -> str:
    return f"{x}:{queue}"


def count(n: int) -> Generator[int, None, str]:
    yield from range(n)
    return "done"


def written_for_the_stdlib(executor: cf.Executor) -> cf.Future[int]:
    return executor.submit(add, 1, 2)


reveal_type(celery.submit(add, 1, 2))  # revealed: flask_execute.futures.Future[int]
reveal_type(celery.submit(add, 1, 2).result())  # revealed: int
reveal_type(celery.apply(add, (1, 2)))  # revealed: flask_execute.futures.Future[int]
reveal_type(celery.map(add, (1, 2), (3, 4)))  # revealed: flask_execute.pool.FuturePool[int]
reveal_type(celery.map(add, (1, 2)).result())  # revealed: list[int]
reveal_type(celery.map(add, (1, 2))[0])  # revealed: flask_execute.futures.Future[int]
reveal_type(celery.starmap(add, [(1, 2)]))  # revealed: flask_execute.pool.FuturePool[int]
reveal_type(celery.get("an id"))  # revealed: flask_execute.futures.Future[Any]
opts = celery.options(queue="q")
reveal_type(opts.submit(tag, 1, queue="x"))  # revealed: flask_execute.futures.Future[str]
reveal_type(opts.map(add, (1, 2)))  # revealed: flask_execute.pool.FuturePool[int]
reveal_type(celery.submit(count, 3))  # revealed: flask_execute.stream_future.StreamFuture[int, str]
reveal_type(celery.submit(count, 3).result())  # revealed: str
for item in celery.submit(count, 3).stream():
    reveal_type(item)  # revealed: int

executor = celery.executor(queue="q")
reveal_type(executor.submit(add, 1, 2))  # revealed: flask_execute.futures.Future[int]
reveal_type(executor.map(add, [1], [2]))  # revealed: typing.Iterator[int]
reveal_type(written_for_the_stdlib(executor))  # revealed: concurrent.futures._base.Future[int]


async def awaited() -> None:
    reveal_type(await celery.submit(add, 1, 2))  # revealed: int
    reveal_type(await celery.map(add, (1, 2)))  # revealed: list[int]


# What must be refused:
wrong: str = celery.submit(add, 1, 2).result()  # error: assignment
wrong_list: list[str] = celery.map(add, (1, 2)).result()  # error: assignment
celery.options().submit(add, "1", 2)  # error: arg-type
celery.options().submit(tag, 1, queue=2)  # error: arg-type
executor.submit(add, 1, "2")  # error: arg-type
