"""A table read whole again after its partition had read further.

Debezium reads each table whole (its initial snapshot) and then streams from
the position in the WAL it keeps in Kafka Connect's offsets. When that
position is lost, the changes after it never reach the topics:

* the replication slot dropped and made again (by hand, as when an inactive
  slot keeps too much WAL; or by Debezium itself after a failover to a
  replica, which holds no slot);
* the slot past ``max_slot_wal_keep_size`` (``wal_status lost``);
* the connector's offsets reset.

With ``source.snapshot_mode: initial`` its task then fails ("... is no longer
available on the server", which ``readside status`` shows); with
``when_needed`` (what that error asks for) Debezium reads every table whole
again and streams on from there. That snapshot brings back every row that
still exists, newer than what the stores hold, so updates made in the lost
stretch arrive. A row deleted in it has no record at all: its document stays
in every store, with lag at zero and the connector running.

Every row of a snapshot carries the LSN the snapshot was taken at, and a
partition's changes carry their stream position (``source.sequence``). The
worker commits with its offsets the highest stream position and the last
snapshot LSN it read (:mod:`pipeline.redelivery`). An initial snapshot comes
before any change of its partition, all its rows at one LSN; a snapshot's
row at an LSN above what the partition read before (a change, or the rows of
an earlier snapshot) is a table read whole again: a :class:`Retaken`. So is
an initial snapshot Debezium began again after Connect stopped in its
middle: the rows it read the first time and deleted since are in no record
either.

The worker then takes the load marks of the views reading the topic away
(:meth:`pipeline.loaded.Watch.gap`), naming ``readside snapshot VIEW
--from-source``: it writes a tombstone for each row gone from the source
that the topics still hold, and loads the view from the source.

A blocking snapshot asked of Debezium by hand (its ``execute-snapshot``
signal of type ``blocking``) looks the same and is reported the same way; it
lost nothing, and the load it names only does the work again.
"""

from __future__ import annotations

from typing import NamedTuple

from pipeline.events import format_lsn

#: the remedy of a view whose table was read whole again
LOAD = "--from-source"


class Retaken(NamedTuple):
    """A snapshot's row read in a partition that had read further before."""

    topic: str
    partition: int
    #: the offset of the first such row read
    offset: int
    #: the LSN the snapshot was taken at
    lsn: int
    #: the highest LSN the partition read before it
    before: int

    def said(self) -> str:
        return (
            f"topic {self.topic} holds its table read whole again (a snapshot "
            f"at LSN {format_lsn(self.lsn)}, from offset {self.offset} of "
            f"partition {self.partition}, which read up to LSN "
            f"{format_lsn(self.before)} before): the connector lost its position "
            "in the WAL (its replication slot dropped or made again, a "
            "failover, its offsets reset), so the rows deleted meanwhile "
            "keep their documents"
        )
