"""A thread pool whose tasks see the context variables of the thread that submitted them (the agent's connection
keeper reaches discovery's worker threads this way; a plain ThreadPoolExecutor's tasks start with an empty
context)."""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class ThreadPool(ThreadPoolExecutor):
    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        return super().submit(contextvars.copy_context().run, fn, *args, **kwargs)
