"""How readside's processes log: one line format, store clients kept quiet.

The command line (:mod:`pipeline.cli`), the benchmarks and each of several
server processes (:mod:`query.server`, through uvicorn's ``log_config``) all
log this way.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import Any

FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
#: Libraries whose INFO lines (a line per request) are hidden.
QUIET = ("elastic_transport", "urllib3", "pymongo")


def setup(level: int, quiet: Iterable[str] = QUIET) -> None:
    """Log at ``level`` to stderr; ``quiet`` loggers at WARNING and above."""
    logging.basicConfig(level=level, format=FORMAT, stream=sys.stderr)
    for name in quiet:
        logging.getLogger(name).setLevel(logging.WARNING)


def dict_config(level: int, quiet: Iterable[str] = QUIET) -> dict[str, Any]:
    """:func:`setup` as a :func:`logging.config.dictConfig` dictionary (for a
    process that sets its logging up itself, such as uvicorn's)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": FORMAT}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "plain",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": logging.getLevelName(level), "handlers": ["stderr"]},
        "loggers": {name: {"level": "WARNING"} for name in quiet},
    }
