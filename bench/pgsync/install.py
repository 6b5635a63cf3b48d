"""pgsync's own virtualenv: installed on first use, and what it holds.

pgsync pins client libraries (elasticsearch-py 7, psycopg2, SQLAlchemy) that
readside's environment must not get, so it runs from a virtualenv of its own
(``--venv``), made with ``python -m venv`` and pip. :func:`clean_env` is the
environment a pgsync command starts from: every inherited variable pgsync
reads is dropped first.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)

PGSYNC_VERSION = "7.3.0"
DEFAULT_VENV = Path("/var/cache/readside/pgsync-venv")
#: What pgsync reads from the environment (``pgsync/settings.py``): a run's
#: environment drops every inherited one of these before setting its own.
_PGSYNC_ENV = ("PG_", "ELASTICSEARCH", "OPENSEARCH", "REDIS_", "SCHEMA", "S3_")


def ensure_pgsync(venv: Path, version: str) -> Path:
    """The ``bin`` directory of a virtualenv holding pgsync ``version``.

    Created on first use with ``python -m venv`` and pip (PyPI): pgsync pins
    client libraries that must stay out of readside's own environment.
    """
    bin_dir = venv / "bin"
    if installed_version(bin_dir) == version:
        return bin_dir
    logger.info(
        "installing pgsync==%s into its own virtualenv %s (first use; pip, "
        "a minute or two)",
        version,
        venv,
    )
    venv.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [
            str(bin_dir / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            f"pgsync=={version}",
        ],
        check=True,
        timeout=1200,
    )
    found = installed_version(bin_dir)
    if found != version:
        raise RuntimeError(f"pgsync {version} not in {venv} after pip: {found}")
    logger.info("pgsync %s installed in %s", version, venv)
    return bin_dir


def installed_version(bin_dir: Path) -> str | None:
    if not (bin_dir / "pgsync").exists():
        return None
    done = subprocess.run(
        [str(bin_dir / "pgsync"), "--version"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tempfile.gettempdir(),  # pgsync reads a .env of its cwd
        env={**clean_env(), "PG_USER": "unused"},
    )
    match = re.search(r"Version: (\S+)", done.stdout)
    return match.group(1) if match else None


def venv_packages(bin_dir: Path) -> dict[str, str]:
    """Versions of pgsync's own client libraries (for the report)."""
    code = (
        "import json, importlib.metadata as m; print(json.dumps({p: m.version(p) "
        "for p in ('pgsync', 'elasticsearch', 'opensearch-py', 'SQLAlchemy', "
        "'psycopg2-binary', 'redis')}))"
    )
    done = subprocess.run(
        [str(bin_dir / "python"), "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    try:
        return dict(json.loads(done.stdout))
    except ValueError:
        return {}


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(_PGSYNC_ENV)}
