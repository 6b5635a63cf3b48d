"""The three kinds of failure, decided where they arise.

* :class:`BadRecord` — one record cannot be decoded or breaks its view's
  contract. The worker sends it to the dead-letter topic and moves on.
* :class:`TransientError` — a store is down, overloaded or slow. The worker
  pauses, backs off with jitter and retries; it commits nothing past it.
* :class:`FatalError` — configuration or credentials are wrong. The process
  stops with the message.

Drivers map their native exceptions onto these classes by exception type in
one small function per sink (``connectors.*.classify``), never by message text.
"""

from __future__ import annotations


class ReadsideError(Exception):
    """Base class of every error readside raises on purpose."""


class BadRecord(ReadsideError):
    """A single record that must go to the dead-letter topic.

    Attributes:
        reason: a short machine-readable reason, e.g. ``decode`` or ``transform``.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class TransientError(ReadsideError):
    """A failure that may pass if the same work is retried later."""


class FatalError(ReadsideError):
    """A failure that retrying cannot fix: stop and tell the operator."""


class Stopped(ReadsideError):
    """A stop was asked while waiting for a store, Kafka or the source to
    become reachable; nothing more was done."""


class ConfigError(FatalError):
    """A configuration file that does not validate; the message names the field."""
