"""Field types shared by the config models of every floor."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator


def _exists(path: Path) -> Path:
    # Certificates and keys are read when a client connects or the server
    # starts: a missing one is refused at load, naming its field.
    if not path.is_file():
        raise ValueError("no such file")
    return path


#: A file that must be there when the config is loaded.
ExistingFile = Annotated[Path, AfterValidator(_exists)]
