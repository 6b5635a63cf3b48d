"""Documents the stores reject during a snapshot load: to the dead-letter topic.

A load goes on past a document a store rejects (e.g. a mapping conflict): it
is dead-lettered (one dead letter per document) before the chunk that holds
it is recorded, so a killed run redoes the chunk rather than lose it, and the
run ends with :class:`RejectedDocuments` (a non-zero exit) naming the count.
Each dead letter carries the origin the caller gives its document: the record
it came from, or the chunk of a load from the source.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from connectors.base import Sink
from pipeline import kafkaclient
from pipeline.checkpoints import ensure_topics
from pipeline.config import Config
from pipeline.decode import FakeMessage, RawMessage
from pipeline.dlq import DeadLetterQueue
from pipeline.errors import FatalError
from pipeline.events import DocumentOp
from pipeline.processor import DeadLetter
from pipeline.sinkwriter import Backoff, SinkWriter
from pipeline.snapshot.state import SnapshotState

#: the source record of a rejected document, to dead-letter it
Origin = Callable[[DocumentOp], RawMessage]


def chunk_origin(chunk: int, after: list[str] | None) -> Origin:
    """What a dead letter of chunk number ``chunk`` of a load from the source
    (the chunk after key ``after``) names as origin."""

    def origin(op: DocumentOp) -> RawMessage:
        value = {"view": op.view, "id": op.doc_id, "chunk": chunk, "after": after}
        return FakeMessage.of_json(
            f"snapshot:{op.view}", op.doc_id, value, offset=chunk
        )

    return origin


class RejectedDocuments(FatalError):
    """A run went to its end, but stores rejected documents it loaded; they
    are on the dead-letter topic, not in the stores."""


class Rejects:
    """Writes a load's ops and dead-letters what the stores reject.

    Args:
        backoff: a fresh backoff for each write's outages.
        stopping: whether a stop was asked (a write in an outage gives up).
    """

    def __init__(
        self,
        cfg: Config,
        backoff: Callable[[], Backoff],
        stopping: Callable[[], bool],
    ) -> None:
        self.cfg = cfg
        self.backoff = backoff
        self.stopping = stopping
        self._dlq: DeadLetterQueue | None = None

    def write(
        self,
        sinks: Mapping[str, Sink],
        ops: list[DocumentOp],
        origin: Origin,
    ) -> int:
        """Write ``ops`` to every chosen sink (retrying outages); dead-letter
        the documents a store rejects (one dead letter per document).

        Returns:
            how many documents were dead-lettered (the caller counts them in
            ``SnapshotState.dead_letters``).
        """
        writer = SinkWriter(
            sinks,
            self.backoff(),
            wait=time.sleep,
            should_abandon=self.stopping,
        )
        seen: set[tuple[str, str]] = set()
        for rej in writer.write({name: ops for name in sinks}):
            if (rej.op.view, rej.op.doc_id) in seen:
                continue
            seen.add((rej.op.view, rej.op.doc_id))
            self._dead_letters().send(
                DeadLetter(
                    origin(rej.op),
                    f"sink:{rej.sink}",
                    "Rejected",
                    rej.reason,
                    rej.op.view,
                )
            )
        if seen:
            # Delivered before the chunk is recorded: a rerun redoes it if not.
            self._dead_letters().flush()
        return len(seen)

    @staticmethod
    def into(ops: list[DocumentOp], origin: Origin, slot: WriteSlot) -> int:
        """:meth:`write` ``ops`` into a write slot's sinks, with its own
        :class:`Rejects`; how many were dead-lettered."""
        sinks, rejects = slot
        return rejects.write(sinks, ops, origin)

    def _dead_letters(self) -> DeadLetterQueue:
        if self._dlq is None:
            kafka = self.cfg.kafka
            admin = kafkaclient.admin(kafka)
            ensure_topics(
                admin, [(kafka.dlq_topic, 1, False)], kafka.replication_factor
            )
            producer = kafkaclient.producer(kafka, {"enable.idempotence": True})
            self._dlq = DeadLetterQueue(producer, kafka.dlq_topic)
        return self._dlq

    def check(self, st: SnapshotState) -> SnapshotState:
        """``st``, unless stores rejected documents: then say so and fail.

        Raises:
            RejectedDocuments: the run ended with documents on the
                dead-letter topic.
        """
        if st.dead_letters and st.state != "running":
            raise RejectedDocuments(
                f"{st.method} of view {st.view} {st.state}, but the stores rejected "
                f"{st.dead_letters} document(s): they are not in the stores but on "
                f"the dead-letter topic {self.cfg.kafka.dlq_topic} with the reason "
                "(`readside dlq list`); fix the cause, then `readside dlq replay` "
                "or run the snapshot again"
            )
        return st


#: the sinks one writer of a load writes into, and its dead letters' producer
WriteSlot = tuple[Mapping[str, Sink], Rejects]
