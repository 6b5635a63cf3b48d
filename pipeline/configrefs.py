"""References a configuration's string values make to what is kept outside it.

* ``${NAME}`` and ``${NAME:-default}``: the environment variable ``NAME``
  (or ``default`` when it is not set).
* ``${file:PATH}``: the text of the file at ``PATH`` without its trailing
  newline, as orchestrators mount secrets (``/run/secrets/...``) and as
  ``readside stack up`` keeps the local stack's passwords
  (``.readside/secrets/``). A relative ``PATH`` is taken from the
  configuration file's folder, not from where the command runs.

Only string values are replaced, after the YAML is parsed, so a secret that
contains YAML syntax cannot change the document's structure. A ``PATH`` holds
no colon: ``${file:PATH:KEY}`` is a Kafka Connect config-provider reference
(``connect.user_ref`` / ``connect.password_ref``), which Kafka Connect
resolves on its own machine, and it is passed on untouched.

Errors name the reference, never what a file or variable holds.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_FILE_REF = re.compile(r"\$\{file:([^:}]+)\}")


def interpolate(
    text: str, env: dict[str, str] | None = None, base: Path | None = None
) -> str:
    """``text`` with its references replaced: environment variables from
    ``env`` (default ``os.environ``), files relative to ``base`` (default
    the working directory)."""
    env = dict(os.environ) if env is None else env
    missing: list[str] = []

    def var(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        missing.append(name)
        return ""

    out = _ENV_REF.sub(var, text)
    if missing:
        raise ConfigError(
            "environment variable(s) not set: " + ", ".join(sorted(set(missing)))
        )
    return _FILE_REF.sub(lambda m: _file_text(m.group(1), base), out)


def _file_text(given: str, base: Path | None) -> str:
    path = Path(given)
    if not path.is_absolute() and base is not None:
        path = base / path
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(
            f"${{file:{given}}} cannot be read ({path}: {exc.strerror or exc})"
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(f"${{file:{given}}} is not UTF-8 text ({path})") from None
    return text.rstrip("\r\n")


def interpolate_tree(
    node: Any, env: dict[str, str] | None, base: Path | None, path: str = ""
) -> Any:
    """Every string value (not keys, not comments) of parsed YAML
    interpolated; an error names the value's place (``sinks.cache.password``)."""
    if isinstance(node, str):
        try:
            return interpolate(node, env, base)
        except ConfigError as exc:
            raise ConfigError(f"{path or '<top>'}: {exc}") from exc
    if isinstance(node, dict):
        return {
            k: interpolate_tree(v, env, base, f"{path}.{k}" if path else str(k))
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [
            interpolate_tree(v, env, base, f"{path}[{i}]") for i, v in enumerate(node)
        ]
    return node
