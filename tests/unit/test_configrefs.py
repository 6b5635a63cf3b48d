"""``${file:PATH}`` references of a configuration (``pipeline.configrefs``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import config
from pipeline.configrefs import interpolate
from pipeline.errors import ConfigError

pytestmark = pytest.mark.unit


def test_a_file_reference_is_the_files_text_without_its_last_newline(
    tmp_path: Path,
) -> None:
    (tmp_path / "pw").write_text("s3cret:{x}\n")
    assert interpolate("a-${file:pw}-b", env={}, base=tmp_path) == "a-s3cret:{x}-b"
    absolute = f"${{file:{tmp_path / 'pw'}}}"
    assert interpolate(absolute, env={}, base=Path("/elsewhere")) == "s3cret:{x}"


def test_a_relative_path_is_taken_from_the_configs_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "conf"
    (folder / "secrets").mkdir(parents=True)
    (folder / "secrets" / "redis").write_text("from-the-folder\n")
    path = folder / "readside.yaml"
    path.write_text("stack: {data_dir: '${file:secrets/redis}'}\n")
    monkeypatch.chdir(tmp_path)  # not where the file is
    assert config.load_stack(path, env={}).data_dir == "from-the-folder"


def test_an_unreadable_file_names_the_field_and_not_what_files_hold(
    tmp_path: Path,
) -> None:
    path = tmp_path / "readside.yaml"
    path.write_text("stack: {data_dir: '${file:missing.password}'}\n")
    with pytest.raises(ConfigError) as info:
        config.load_stack(path, env={})
    message = str(info.value)
    assert "stack.data_dir" in message
    assert "${file:missing.password} cannot be read" in message


def test_connect_provider_references_pass_through() -> None:
    ref = "${file:/etc/kafka-connect/readside.properties:password}"
    assert interpolate(ref, env={}) == ref
    assert interpolate("${env:READSIDE_PW}", env={}) == "${env:READSIDE_PW}"


def test_the_stack_section_loads_before_the_secrets_it_makes_exist(
    tmp_path: Path,
) -> None:
    """``stack up`` reads only its section: the first start must not need
    the passwords the rest of the file names."""
    path = tmp_path / "readside.yaml"
    path.write_text(
        "stack: {postgres_port: 25432}\n"
        "sinks: {cache: {type: redis, password: '${file:none/yet.password}'}}\n"
    )
    assert config.load_stack(path, env={}).postgres_port == 25432
    with pytest.raises(ConfigError, match=r"none/yet\.password"):
        config.load(path, env={})
