"""One log format for every readside process (pipeline.logs)."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def test_a_server_process_logs_as_the_command_line_does() -> None:
    """The dictionary uvicorn applies in each server process gives the lines
    the CLI's own setup gives: same format, same level, clients quiet."""
    code = """
        import logging, logging.config, sys
        from pipeline import logs
        if sys.argv[-1] == "cli":
            logs.setup(logging.INFO)
        else:
            logging.config.dictConfig(logs.dict_config(logging.INFO))
        logging.getLogger("readside.x").info("kept")
        logging.getLogger("readside.x").debug("dropped: below the level")
        logging.getLogger("urllib3").info("dropped: a quiet client")
        logging.getLogger("urllib3").warning("kept too")
    """
    outs = [
        _run(code.replace("sys.argv[-1]", repr(side))).stderr for side in ("cli", "uv")
    ]
    for err in outs:
        lines = err.splitlines()
        assert [line.split(" ", 2)[2] for line in lines] == [
            "INFO readside.x kept",
            "WARNING urllib3 kept too",
        ], err
