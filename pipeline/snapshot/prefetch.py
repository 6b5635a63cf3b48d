"""Reading the next chunk of a snapshot load while the last one is written.

A chunk's read (its statement on the source, then building its documents)
needs only the last key of the chunk before it, which the read itself
returns; its write needs the stores. :class:`ReadAhead` runs the reads in a
thread of their own, at most ``depth`` chunks ahead of the writes, so that
the source, this process and the stores work at the same time. Each chunk is
still read in its own snapshot and carries that snapshot's version, and the
caller records a chunk's last key only once the chunk is written: a killed
run resumes after the last chunk written, whatever was read ahead of it.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")
K = TypeVar("K")

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
