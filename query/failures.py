"""The log of a task the server repeats (a watermark sample, a checkpoint
refresh, a status sample) while it keeps failing.

Such a task runs every 20 ms to every few seconds, and while a source,
broker or store is down each run fails the same way: a traceback per run
would bury the rest of the log. :class:`FailureRun` logs the first failure
of a run with its traceback, then one line per ``interval_s`` while the run
goes on, and one line when the task succeeds again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

#: While a task keeps failing, one line is logged per this many seconds.
INTERVAL_S = 60.0


class FailureRun:
    """The failures in a row of one repeated task.

    Not thread-safe: each task calls it from one thread at a time (under
    the lock that runs the task).

    Args:
        logger: where the lines go.
        what: the task, as the lines name it (``"watermark sample"``).
        meanwhile: what holds while it fails (``"the watermark stays"``).
        interval_s: seconds between two lines of one run.
    """

    def __init__(
        self,
        logger: logging.Logger,
        what: str,
        meanwhile: str,
        interval_s: float = INTERVAL_S,
    ) -> None:
        self.logger = logger
        self.what = what
        self.meanwhile = meanwhile
        self.interval_s = interval_s
        self.count = 0  # failures since the last success
        self._logged_at = 0.0

    def attempt(self, task: Callable[[], object]) -> bool:
        """Run ``task`` once; whether it succeeded. An exception it raises is
        logged as this run's (never raised: the task's last good result
        stands meanwhile)."""
        try:
            task()
        except Exception as exc:  # noqa: BLE001 - logged; the caller goes on
            self.failed(exc)
            return False
        self.succeeded()
        return True

    def failed(self, exc: BaseException) -> None:
        """One more failure: logged if it starts a run or a line is due."""
        now = time.monotonic()
        self.count += 1
        if self.count == 1:
            self.logger.warning(
                "%s failed; %s until it succeeds",
                self.what,
                self.meanwhile,
                exc_info=exc,
            )
        elif now - self._logged_at >= self.interval_s:
            self.logger.warning(
                "%s still failing: %d in a row, the last: %s: %s",
                self.what,
                self.count,
                type(exc).__name__,
                exc,
            )
        else:
            return
        self._logged_at = now

    def succeeded(self) -> None:
        """The task worked: ends a run of failures (logged)."""
        if self.count:
            self.logger.info(
                "%s succeeded again after %d failures", self.what, self.count
            )
            self.count = 0
