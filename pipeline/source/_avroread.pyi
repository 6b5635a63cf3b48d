"""The native Avro binary reader (``_avroread.c``); see
:mod:`pipeline.source.avro_reader`, whose ``native_table`` makes its nodes."""

from typing import Any, final

#: Records, arrays and maps nested deeper than this in a datum raise ValueError.
MAX_DEPTH: int

@final
class Reader:
    """Reads datums of the schema of node table ``nodes`` from node ``root``.

    Raises (at construction) TypeError or ValueError for a malformed table.
    """

    def __new__(cls, nodes: tuple[tuple[Any, ...], ...], root: int) -> Reader: ...
    def __call__(
        self, buf: bytes | bytearray | memoryview, pos: int, /
    ) -> tuple[Any, int]:
        """One datum of ``buf`` from ``pos``: its value and the position after it.

        Raises:
            EOFError: the datum ends early.
            ValueError: a corrupt datum (bad branch, index, length, count,
                varint, UTF-8, or nesting deeper than MAX_DEPTH).
            IndexError: ``pos`` is outside ``buf``.
            TypeError: ``buf`` is not a bytes-like object.
        """
