"""Producing items on a background thread while the caller consumes them: the stages of
a pipeline (reading, encoding, converting) overlap, and the GIL-free parts of each run on
another core."""

from __future__ import annotations

import queue
import threading
from typing import Any, Generator, Iterator, TypeVar

T = TypeVar("T")

__all__ = ["in_background"]


def in_background(items: Iterator[T], name: str, depth: int = 2) -> Generator[T, None, None]:
    """``items`` produced on a background thread, up to ``depth`` ahead of the consumer.
    An exception there is raised here; closing this generator stops and joins the thread
    (which closes ``items``)."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: tuple[bool, Any]) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for item in items:
                if not put((True, item)):
                    return
            put((False, None))
        except BaseException as e:  # handed to the consumer, which raises it
            put((False, e))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    try:
        while True:
            more, item = q.get()
            if not more:
                if item is not None:
                    raise item
                return
            yield item
    finally:
        stop.set()
        thread.join()
