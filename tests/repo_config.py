"""The repository's ``readside.yaml`` for tests that run without the stack.

It reads the local stack's passwords from the files ``readside stack up``
exports (``${file:.readside/stack/secrets/<name>.password}``, relative to
its folder). A test that loads it, or a changed copy, does so in a folder of
its own where :func:`stand_in_secrets` wrote stand-in passwords, so it
neither needs a stack that ran nor reads a real one's secrets.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml

from pipeline import config

REPO = Path(__file__).resolve().parents[1]
TEXT = (REPO / "readside.yaml").read_text()
#: the YAML data, not interpolated
DATA: dict[str, Any] = yaml.safe_load(TEXT)
SECRETS = ("postgres", "kafka", "redis", "mongodb", "connect", "registry")


def stand_in_secrets(folder: Path) -> None:
    """Stand-in password files where a ``readside.yaml`` in ``folder``
    looks for the stack's."""
    secrets = folder / ".readside" / "stack" / "secrets"
    secrets.mkdir(parents=True, exist_ok=True)
    for name in SECRETS:
        (secrets / f"{name}.password").write_text(f"stand-in-{name}\n")


def write_config(folder: Path, data: Any = None) -> Path:
    """``folder/readside.yaml``: ``data`` as YAML (default: the repository's
    file as it is), beside stand-in passwords."""
    stand_in_secrets(folder)
    path = folder / "readside.yaml"
    path.write_text(TEXT if data is None else yaml.safe_dump(data))
    return path


def load_repo_config(folder: Path) -> config.Config:
    """The repository's configuration, loaded from a copy in ``folder``."""
    return config.load(write_config(folder), env={})


@functools.cache
def repo_config_path() -> Path:
    """A copy of the repository's file, as it is, beside stand-in passwords,
    in a folder of this test process's (removed at its exit)."""
    folder = Path(tempfile.mkdtemp(prefix="readside-config-"))
    atexit.register(shutil.rmtree, folder, True)
    return write_config(folder)
