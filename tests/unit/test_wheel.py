"""The image's package holds every module readside imports (issue 11).

The image installs the package built from what its Dockerfile copies, not the
checkout: a folder it does not copy (``query/`` was not) breaks every command
there while every test of the checkout passes. The wheel is built from those
files alone and unpacked into a directory of its own;
a Python without its site hooks (so neither the checkout nor its editable
install is importable) finds readside only there, and the dependencies in
site-packages. Every module of the wheel must import, and every command's
``--help`` must run.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import click
import pytest

from pipeline.cli import main

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


def _commands(cmd: click.Command, path: list[str]) -> list[list[str]]:
    out = [path]
    if isinstance(cmd, click.Group):
        for name, sub in sorted(cmd.commands.items()):
            out += _commands(sub, [*path, name])
    return out


def _copied_before_install(dockerfile: Path) -> list[str]:
    """The files and folders the Dockerfile copies before ``pip install .``."""
    out: list[str] = []
    for line in dockerfile.read_text().splitlines():
        words = line.split()
        if words[:1] == ["RUN"] and "pip install" in line:
            return out
        if words[:1] == ["COPY"]:
            out += [w.rstrip("/") for w in words[1:-1] if not w.startswith("--")]
    raise AssertionError("the Dockerfile never runs pip install")


@pytest.fixture(scope="module")
def unpacked(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Built from what the image's Dockerfile copies before it installs (so
    # the checkout gets no build/ or egg-info either); pip fetches the build
    # backend pyproject.toml names.
    src = tmp_path_factory.mktemp("src")
    for name in _copied_before_install(REPO / "Dockerfile"):
        if (REPO / name).is_dir():
            shutil.copytree(
                REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            shutil.copy(REPO / name, src / name)
    dist = tmp_path_factory.mktemp("dist")
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "--wheel-dir",
            str(dist),
            str(src),
        ],
        capture_output=True,
        text=True,
        cwd=dist,
        timeout=600,
        check=False,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = dist.glob("readside-*.whl")
    root = tmp_path_factory.mktemp("wheel")
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(root)
    return root


def _run_alone(root: Path, code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``code`` in a Python that sees the unpacked wheel and site-packages
    (without the .pth hooks that make the checkout importable)."""
    site = sysconfig.get_paths()["purelib"]
    boot = f"import sys; sys.path[:0] = [{str(root)!r}, {site!r}]; " + code
    return subprocess.run(
        [sys.executable, "-S", "-c", boot, *args],
        capture_output=True,
        text=True,
        cwd=root,
        timeout=120,
        check=False,
    )


def test_wheel_alone_imports_every_module_it_holds(unpacked: Path) -> None:
    modules = sorted(
        ".".join(p.relative_to(unpacked).with_suffix("").parts).removesuffix(
            ".__init__"
        )
        for p in unpacked.rglob("*.py")
        if not p.name.startswith("__main__")
    )
    assert {"pipeline.cli", "query.server", "connectors.redis.sink"} <= set(modules)
    code = (
        "import importlib, pipeline; "
        f"assert pipeline.__file__.startswith({str(unpacked)!r}), pipeline.__file__; "
        f"[importlib.import_module(m) for m in {modules!r}]"
    )
    done = _run_alone(unpacked, code)
    assert done.returncode == 0, done.stderr[-3000:]


def test_wheel_alone_runs_every_command_help(unpacked: Path) -> None:
    for path in _commands(main, []):
        done = _run_alone(
            unpacked,
            "from pipeline.cli import main; main()",
            *path,
            "--help",
        )
        assert done.returncode == 0, (path, done.stderr[-2000:])
        assert "Usage:" in done.stdout, path
