"""Reads by id on the event loop, joined while one is on the wire.

The server answers many gets by id at once. Each one read alone costs a
store round trip and the client library's work for it, which on Redis is
most of a request's time in the server. :class:`JoinedReads` sends the
first read of a view at once and, while it is on the wire, holds the reads
of that view that arrive after it; when it is back, those go to the store
together, as one read of all their ids, and each caller gets its own ids'
answer. No read waits for more than the one before it.

A held read joins the *next* read, never one already sent: a read sent
before a request arrived may predate what the request waited for
(``min_lsn``: the watermark it waited on was reached before the request
asked), so every answer comes from a read that started after its request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from connectors.base import Stored
from connectors.reads import AsyncFetch

#: The ids one joined read asks for at most; more wait for the next one.
MAX_JOINED_IDS = 1000


@dataclass
class _Line:
    """The reads of one view on one store: whether one is on the wire, and
    the reads held for the next one."""

    busy: bool = False
    held: list[tuple[Sequence[str], asyncio.Future[dict[str, Stored]]]] = field(
        default_factory=list
    )


class JoinedReads:
    """Reads by id through :class:`~connectors.reads.AsyncFetch` sinks,
    joined per store and view while one is on the wire.

    For one event loop (the server's): not thread-safe.
    """

    def __init__(self) -> None:
        self._lines: dict[tuple[AsyncFetch, str], _Line] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def fetch(
        self, sink: AsyncFetch, view: str, ids: Sequence[str]
    ) -> dict[str, Stored]:
        """What ``sink.afetch(view, ids)`` returns, from a read that started
        after this call; raises what that read raised."""
        line = self._lines.get((sink, view))
        if line is None:
            line = self._lines[(sink, view)] = _Line()
        if line.busy:
            held: asyncio.Future[dict[str, Stored]] = (
                asyncio.get_running_loop().create_future()
            )
            line.held.append((ids, held))
            return await held
        line.busy = True
        failed: Exception | None = None
        try:
            return await sink.afetch(view, ids)
        except Exception as exc:
            failed = exc
            raise
        finally:
            self._next(line, sink, view, failed)

    def _next(
        self, line: _Line, sink: AsyncFetch, view: str, failed: Exception | None
    ) -> None:
        """Send the held reads of ``line`` as one, or mark it idle.

        ``failed``: what the read that came back raised. The reads held
        while it was out get that error at once, not a read of their own: a
        store that did not answer (down, or slow to the timeout) is not
        asked again by every caller in turn, and each falls to the view's
        next store as soon as the one before it did."""
        if failed is not None:
            for _ids, held in line.held:
                if not held.done():
                    held.set_exception(failed)
            line.held.clear()
        batch: list[tuple[Sequence[str], asyncio.Future[dict[str, Stored]]]] = []
        count = taken = 0
        for ids, held in line.held:
            if batch and count + len(ids) > MAX_JOINED_IDS:
                break
            taken += 1
            if not held.done():  # done: its request was cancelled (timeout)
                batch.append((ids, held))
                count += len(ids)
        del line.held[:taken]
        if not batch:
            line.busy = False
            return
        task = asyncio.get_running_loop().create_task(
            self._send(line, sink, view, batch)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(
        self,
        line: _Line,
        sink: AsyncFetch,
        view: str,
        batch: list[tuple[Sequence[str], asyncio.Future[dict[str, Stored]]]],
    ) -> None:
        wanted = list(dict.fromkeys(i for ids, _held in batch for i in ids))
        failed: Exception | None = None
        try:
            stored = await sink.afetch(view, wanted)
        except asyncio.CancelledError:  # the loop stops
            for _ids, held in batch:
                held.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - each caller gets it
            failed = exc
            for _ids, held in batch:
                if not held.done():
                    held.set_exception(exc)
        else:
            for ids, held in batch:
                if not held.done():
                    held.set_result({i: stored[i] for i in ids if i in stored})
        finally:
            self._next(line, sink, view, failed)

    async def aclose(self) -> None:
        """Wait for the joined reads on the wire (the server stops)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
