"""The image's wheel in a virtualenv of its own (``test_wheel_install.py``).

:func:`image_context` lays out the files the ``Dockerfile`` copies into the
image before its ``pip install .``, as Docker would copy them; the wheel is
built from there, so a package missing from pyproject's package list *or*
from the Dockerfile's ``COPY`` lines is missing from it.

Downloads are kept in a wheelhouse under the stack's cache directory
(``/var/cache/readside/wheelhouse`` as root), which the next CI run on the
machine finds: building and installing try it alone first (``--no-index``)
and go to the package index only for what it lacks.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path, PurePosixPath

PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check"]


def image_context(repo: Path, dest: Path) -> Path:
    """Copy what the Dockerfile's ``COPY`` lines copy, up to the ``RUN`` that
    installs the project, to ``dest`` (the image's root); return the
    directory that ``pip install .`` runs in.

    Raises:
        AssertionError: a form of the Dockerfile this reading does not know
            (a flag, another stage, a ``.dockerignore``), or a source that
            does not exist.
    """
    assert not (repo / ".dockerignore").exists(), (
        "image_context: .dockerignore unsupported"
    )
    workdir = PurePosixPath("/")
    for instruction, args in _instructions(repo / "Dockerfile"):
        if instruction == "WORKDIR":
            workdir = workdir / args
        elif instruction == "COPY":
            words = shlex.split(args)
            assert not any(w.startswith("--") for w in words), f"COPY {args}: flags"
            *sources, target = words
            into = workdir / target
            for source in sources:
                src = repo / source
                assert src.exists(), f"Dockerfile: COPY {source}: no such file"
                there = dest / into.relative_to("/")
                if src.is_dir():
                    shutil.copytree(src, there, dirs_exist_ok=True, ignore=_CACHES)
                elif target.endswith("/") or len(sources) > 1:
                    there.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(src, there / src.name)
                else:
                    there.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(src, there)
        elif instruction == "RUN" and re.search(r"\bpip install\b.*\s\.$", args):
            return dest / workdir.relative_to("/")
    raise AssertionError("Dockerfile: no `RUN pip install ... .`")


_CACHES = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of each line, continuations joined."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def build_wheel(context: Path, out: Path, wheelhouse: Path) -> Path:
    """The wheel of ``context``, built in pip's isolated build environment
    with the build requirements of its pyproject.toml from ``wheelhouse``."""
    requires = tomllib.loads((context / "pyproject.toml").read_text())["build-system"][
        "requires"
    ]
    _offline_first(
        [*PIP, "wheel", "--no-deps", "-w", str(out), str(context)],
        [*PIP, "download", "-d", str(wheelhouse), *requires],
        wheelhouse,
    )
    (wheel,) = out.glob("*.whl")
    return wheel


def install_alone(wheel: Path, venv: Path, wheelhouse: Path) -> Path:
    """A new virtualenv (no pip in it, no system site-packages) holding
    ``wheel`` and its dependencies; returns its ``bin`` directory."""
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True
    )
    python = ["--python", str(venv / "bin" / "python")]
    _offline_first(
        [*PIP, *python, "install", str(wheel)],
        [*PIP, *python, "download", "-d", str(wheelhouse), str(wheel)],
        wheelhouse,
    )
    for copied in wheelhouse.glob(f"{wheel.name.split('-')[0]}-*.whl"):
        copied.unlink()  # pip download copies the wheel itself there too
    return venv / "bin"


def _offline_first(command: list[str], fetch: list[str], wheelhouse: Path) -> None:
    """``command`` with ``wheelhouse`` as its only index; if that fails,
    ``fetch`` (which fills the wheelhouse from the package index) and once
    more offline."""
    wheelhouse.mkdir(parents=True, exist_ok=True)
    offline = [*command, "--no-index", "--find-links", str(wheelhouse)]
    env = clean_env()
    if _run(offline, env).returncode == 0:
        return
    fetched = _run(fetch, env)
    assert fetched.returncode == 0, f"{shlex.join(fetch)}:\n{fetched.stdout[-3000:]}"
    done = _run(offline, env)
    assert done.returncode == 0, f"{shlex.join(offline)}:\n{done.stdout[-3000:]}"


def _run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        env=env,
        capture_output=False,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
        check=False,
    )


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment less what points Python at other code."""
    drop = (
        "PYTHONPATH",
        "PYTHONHOME",
        "PYTHONSTARTUP",
        "PYTHONUSERBASE",
        "VIRTUAL_ENV",
    )
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PYTHONNOUSERSITE"] = "1"
    return {**env, **extra}
