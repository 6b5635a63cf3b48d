"""What one batch asks of one aggregate view: the roots to re-read.

The engine gathers it while it routes a batch's changes
(:meth:`pipeline.aggregate.view.AggregateView.route`) and hands it to the
view's re-read once the batch is decoded; a document a transform refused on
the way is blamed on a change that named its root.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.aggregate.reader import key_text
from pipeline.aggregate.roots import Key
from pipeline.aggregate.tree import Node, direct_keys
from pipeline.errors import BadRecord
from pipeline.events import UNCHANGED, ChangeEvent, Op, Position


@dataclass
class Pending:
    """What one batch asks of one aggregate view."""

    root_keys: set[Key] = field(default_factory=set)
    # Per node alias, link values to resolve by SQL, each with a change that
    # named it.
    links: dict[str, dict[Key, Position | None]] = field(default_factory=dict)
    txids: set[int] = field(default_factory=set)
    lsn: int | None = None
    commit_ts_ms: int | None = None
    position: Position | None = None  # the batch's last change
    changes: int = 0
    # A change that named each root of ``root_keys`` (absent: ``position``).
    named_by: dict[Key, Position | None] = field(default_factory=dict)
    # A table of the view was truncated (at this change): every root it defines.
    every_root: Position | None = None
    # Roots whose document a transform refused: (doc id, error).
    failures: list[tuple[str, BadRecord]] = field(default_factory=list)
    # The change blamed for each refused doc id (see :meth:`blamed`).
    refused_by: dict[str, Position | None] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.root_keys or self.links or self.every_root is not None)

    def name(self, key: Key, position: Position) -> None:
        """Note that the change at ``position`` names root ``key``."""
        self.root_keys.add(key)
        self.named_by[key] = position

    def blamed(self, ident: str) -> Position | None:
        """The change to dead-letter for refused document ``ident``: one that
        named its root (the batch's last change when none is known)."""
        return self.refused_by.get(ident) or self.position

    def note(self, event: ChangeEvent, node: Node) -> None:
        """Note the roots a change of ``node``'s table names, or the links
        that name them once resolved."""
        if node.kind == "root":
            pk = node.table.primary_key
            if all(c in event.key for c in pk):
                key = tuple(key_text(event.key[c]) for c in pk)
                self.name(key, event.position)
            return
        direct = direct_keys(node)
        cols = direct if direct is not None else list(node.on)
        images = (
            (event.key,) if event.op is Op.TOMBSTONE else (event.before, event.after)
        )
        for image in images:
            if image is None:
                continue
            values = [image.get(c, event.key.get(c)) for c in cols]
            if any(v is None or v is UNCHANGED for v in values):
                continue
            text = tuple(key_text(v) for v in values)
            if direct is not None:
                self.name(text, event.position)
            else:
                self.links.setdefault(node.alias, {})[text] = event.position
