"""The image's readside, installed alone, starts (issue 11 item 5).

The wheel is built from the files the Dockerfile copies into the image
(``wheelenv.image_context``) and installed with its dependencies alone into a
new virtualenv; every command runs from a temporary directory with no
PYTHONPATH, so nothing comes from the source tree. Then:

- every module of the installed packages imports, and every import statement
  in them (lazy ones inside functions too) resolves: a package left out of
  pyproject's package list or of the Dockerfile fails here;
- every file of those packages in the source tree is installed (package data
  such as the status page);
- ``--help`` of every ``readside`` command, enumerated from the click group;
- ``readside config check`` on the config file the compose recipe mounts,
  with the environment compose gives the readside services;
- ``readside stack status`` on the local stack, from the installed clients.

The first run on a machine downloads the build and runtime dependencies into
the wheelhouse (about 30 MB); later runs install from it without the index.
"""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import wheelenv
import yaml
from compose_cli import compose_config
from harness import REPO, stack_config

from pipeline.stack import runner

pytestmark = pytest.mark.integration

PROBE = Path(__file__).with_name("wheel_probe.py")


@dataclass
class Installed:
    bin: Path
    tmp: Path
    probe: dict[str, Any]

    def run(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bin / "readside"), *args],
            cwd=self.tmp,
            env=env or wheelenv.clean_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    tmp = tmp_path_factory.mktemp("wheel")
    wheelhouse = runner.cache_dir(stack_config()) / "wheelhouse"
    context = wheelenv.image_context(REPO, tmp / "image")
    wheel = wheelenv.build_wheel(context, tmp / "dist", wheelhouse)
    bin_dir = wheelenv.install_alone(wheel, tmp / "venv", wheelhouse)
    work = tmp / "cwd"
    work.mkdir()
    done = subprocess.run(
        [str(bin_dir / "python"), "-I", str(PROBE), "readside", str(REPO)],
        cwd=work,
        env=wheelenv.clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return Installed(bin_dir, work, json.loads(done.stdout))


def test_wheel_installed_alone_imports_everything_readside_imports(
    installed: Installed,
) -> None:
    probe = installed.probe
    assert probe["problems"] == []
    assert {"pipeline", "connectors", "transforms", "query"} <= set(probe["packages"])
    venv = installed.bin.parent
    for name, where in probe["packages"].items():
        assert Path(where).is_relative_to(venv), f"{name} imported from {where}"
    assert probe["source_on_path"] == []


def test_wheel_installed_alone_holds_every_file_of_its_packages(
    installed: Installed,
) -> None:
    site = Path(installed.probe["packages"]["pipeline"]).parents[1]
    missing = []
    for package in installed.probe["packages"]:
        for path in _tracked(REPO / package):
            if not (site / path.relative_to(REPO)).exists():
                missing.append(str(path.relative_to(REPO)))
    assert missing == []


def _tracked(folder: Path) -> list[Path]:
    """The files of ``folder`` git tracks (all but caches outside a checkout)."""
    done = subprocess.run(
        ["git", "ls-files", "-z", "."],
        cwd=folder,
        capture_output=True,
        check=False,
    )
    if done.returncode == 0:
        return [folder / n for n in done.stdout.decode().split("\0") if n]
    return [
        p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts
    ]


def test_wheel_installed_alone_every_command_help_runs(installed: Installed) -> None:
    commands = installed.probe["commands"]
    assert ["config", "check"] in commands
    assert ["worker"] in commands

    def help_of(path: list[str]) -> str | None:
        done = installed.run(*path, "--help")
        if done.returncode != 0 or "Usage:" not in done.stdout:
            return (
                f"readside {' '.join(path)} --help: exit {done.returncode}: "
                + (done.stderr or done.stdout)[-1500:]
            )
        return None

    with ThreadPoolExecutor(max_workers=4) as pool:
        failures = [f for f in pool.map(help_of, commands) if f]
    assert failures == []


def test_wheel_installed_alone_checks_the_compose_config(
    installed: Installed, tmp_path: Path
) -> None:
    secrets = {
        name: f"{name.lower().replace('_', '-')}-0123456789abcdef"
        for name in _example_variables()
    }
    resolved = compose_config(REPO, secrets, tmp_path)
    worker = resolved["services"]["worker"]
    env = {k: str(v) for k, v in worker["environment"].items()}
    (mount,) = [v for v in worker["volumes"] if v["target"] == env["READSIDE_CONFIG"]]
    env["READSIDE_CONFIG"] = mount["source"]  # the file compose mounts there
    base = wheelenv.clean_env()
    env.update({k: base[k] for k in ("PATH", "HOME") if k in base})
    done = installed.run("config", "check", "--no-sql", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "configuration OK" in done.stdout
    assert "security.protocol=SASL_PLAINTEXT" in done.stdout
    for secret in secrets.values():
        assert secret not in done.stdout + done.stderr


def _example_variables() -> list[str]:
    example = (REPO / "deploy" / "compose.env.example").read_text()
    return [
        line.split("=", 1)[0]
        for line in example.splitlines()
        if line.strip() and not line.startswith("#")
    ]


def test_wheel_installed_alone_reaches_the_local_stack(
    installed: Installed, stack: Any, tmp_path: Path
) -> None:
    config = tmp_path / "stack.yaml"
    settings = stack.model_dump(exclude_none=True)
    settings["cache_dir"] = str(runner.cache_dir(stack))
    config.write_text(yaml.safe_dump({"stack": settings}))
    done = installed.run("--config", str(config), "stack", "status", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {row["name"]: row for row in json.loads(done.stdout)}
    assert {"postgres", "kafka", "connect", "redis"} <= set(rows)
    assert [r for r in rows.values() if r["problem"] is not None] == []
    # the pid files of the stack's data directory were read: the config the
    # installed readside loaded is the one written here
    assert all(r["pid"] is not None for r in rows.values()), rows
