"""A snapshot load's chunks read ahead of their writes, and written side by side.

A chunk's read (its statement on the source, then building its documents)
needs only the last key of the chunk before it, which the read itself
returns; its write needs the stores. :class:`ReadAhead` runs the reads in a
thread of their own, at most ``depth`` chunks ahead of the writes, so that
the source, this process and the stores work at the same time, and
:class:`InOrder` has several chunks written at once (a store such as
Elasticsearch takes two bulk requests faster than one after the other),
each write slot with sinks of its own, while the chunks are recorded in
their order. Each chunk is still read in its own snapshot and carries that
snapshot's version (writes of different chunks touch different documents,
and the version rule orders any overlap with the stream), and the caller
records a chunk's last key only once it and every chunk before it are
written: a killed run resumes after them, whatever was read or written
ahead.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Generic, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")
K = TypeVar("K")
S = TypeVar("S")
R = TypeVar("R")

#: how long a blocked thread waits before it looks again whether to stop
_POLL_S = 0.1


class _End:
    """The reads ended (nothing more after the chunk before it)."""


class ReadAhead(Generic[K, T]):
    """Chunks of ``read``, each read in a thread while the caller writes the one before.

    Args:
        read: the chunk after a key (None: from the start), or None when
            there are no more; it may raise (the error reaches the caller).
        next_key: the key after which the chunk following ``chunk`` starts,
            or None when ``chunk`` was the last one.
        start: the key the first chunk starts after.
        depth: chunks read ahead of the one the caller holds.
    """

    def __init__(
        self,
        read: Callable[[K | None], T | None],
        next_key: Callable[[T], K | None],
        start: K | None,
        depth: int = 1,
    ) -> None:
        self._read = read
        self._next_key = next_key
        self._queue: queue.Queue[T | BaseException | _End] = queue.Queue(depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(start,), name="snapshot-read-ahead", daemon=True
        )
        self._thread.start()

    def __iter__(self) -> Iterator[T]:
        """The chunks in order; an error of a read is raised where its chunk
        would have come (the chunks before it are all handed out first)."""
        while True:
            item = self._queue.get()
            if isinstance(item, _End):
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        """Stop reading (a read under way finishes first) and wait for the thread."""
        self._stop.set()
        while self._thread.is_alive():
            try:  # make room for a chunk the thread is waiting to hand over
                self._queue.get(timeout=_POLL_S)
            except queue.Empty:
                pass
        self._thread.join()

    def __enter__(self) -> ReadAhead[K, T]:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _run(self, after: K | None) -> None:
        while not self._stop.is_set():
            try:
                chunk = self._read(after)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                self._put(exc)
                return
            if chunk is None:
                break
            if not self._put(chunk):
                return
            key = self._next_key(chunk)
            if key is None:
                break
            after = key
        self._put(_End())

    def _put(self, item: T | BaseException | _End) -> bool:
        """Hand ``item`` over, unless a stop is asked first."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_POLL_S)
            except queue.Full:
                continue
            return True
        return False


class InOrder(Generic[S]):
    """Work on up to ``len(slots)`` items at once, finished in submission order.

    Item ``n`` runs with ``slots[n % len(slots)]`` (e.g. sinks of its own),
    which no other item uses meanwhile; its ``done`` runs in the caller's
    thread once it and every item before it are finished. One slot runs each
    item in the caller's thread at once.
    """

    def __init__(self, slots: Sequence[S]) -> None:
        if not slots:
            raise ValueError("at least one slot")
        self._slots = list(slots)
        self._pool = (
            ThreadPoolExecutor(len(slots), thread_name_prefix="snapshot-write")
            if len(slots) > 1
            else None
        )
        self._running: deque[tuple[Future[Any], Callable[[Any], None]]] = deque()
        self._count = 0

    def submit(self, work: Callable[[S], R], done: Callable[[R], None]) -> None:
        """Start ``work`` on a free slot; the oldest item is finished first
        when every slot is taken (its error is raised here)."""
        slot = self._slots[self._count % len(self._slots)]
        self._count += 1
        if self._pool is None:
            done(work(slot))
            return
        self._running.append((self._pool.submit(work, slot), done))
        if len(self._running) >= len(self._slots):
            self._finish_oldest()

    def drain(self) -> None:
        """Finish every item submitted (the first error is raised)."""
        while self._running:
            self._finish_oldest()

    def close(self) -> None:
        """Wait for the items under way without finishing them (after an error)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._running.clear()

    def _finish_oldest(self) -> None:
        future, done = self._running.popleft()
        done(future.result())

    def __enter__(self) -> InOrder[S]:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
