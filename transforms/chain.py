"""A view's transform chain: pure steps applied in order.

A step is any callable ``doc -> doc | None``; ``None`` drops the document
and stops the chain. Steps must not modify their input (built-ins never do;
user transforms receive a shallow copy). :func:`build_chain` builds and
validates every step at start, so a bad configuration fails before the first
record.

Errors per record: a step raising :class:`~pipeline.errors.BadRecord` keeps
its reason; any other exception from a step (a user transform's bug) becomes
``BadRecord("transform", "<step>: <ExcType>: <msg>")`` so that only this
record is dead-lettered. :class:`~pipeline.errors.TransientError` and
:class:`~pipeline.errors.FatalError` raised on purpose pass through.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pipeline.errors import BadRecord, ConfigError, ReadsideError
from pipeline.events import Document
from transforms.base import Transform
from transforms.builtins import BUILTINS
from transforms.loader import load_entry_point, load_path

__all__ = ["Chain", "Step", "StepConfig", "Transform", "build_chain"]


class StepConfig(Protocol):
    """What :func:`build_chain` reads of a step:
    ``pipeline.viewconfig.TransformConfig``."""

    @property
    def type(self) -> str: ...

    @property
    def model_extra(self) -> dict[str, Any] | None: ...


@dataclass(frozen=True, slots=True)
class Step:
    """One configured step.

    Attributes:
        label: how errors name the step, e.g. ``transforms[2] (rename)``.
        transform: the transform.
        user: user code: it gets a copy of the document and its result is
            checked.
    """

    label: str
    transform: Transform
    user: bool = False


class Chain:
    """Applies its steps in order and stops at the first ``None``."""

    __slots__ = ("_steps",)

    def __init__(self, steps: Iterable[Step] = ()) -> None:
        self._steps = tuple(steps)

    @property
    def steps(self) -> tuple[Step, ...]:
        return self._steps

    def __len__(self) -> int:
        return len(self._steps)

    def __call__(self, doc: Document) -> Document | None:
        """Transform one document; the input is never modified.

        Raises:
            BadRecord: a step failed on this document (message names the step).
        """
        current: Document = doc
        for step in self._steps:
            try:
                result = step.transform(dict(current) if step.user else current)
            except BadRecord as exc:
                raise BadRecord(exc.reason, f"{step.label}: {exc}") from exc
            except ReadsideError:
                raise
            except Exception as exc:
                raise BadRecord(
                    "transform", f"{step.label}: {type(exc).__name__}: {exc}"
                ) from exc
            if result is None:
                return None
            if step.user and not isinstance(result, dict):
                raise BadRecord(
                    "transform",
                    f"{step.label}: returned {type(result).__name__}, "
                    "expected a dict or None",
                )
            current = result
        return current


def build_chain(configs: Sequence[StepConfig]) -> Chain:
    """Build and validate the chain of a view.

    Args:
        configs: the view's ``transforms`` list; each has a ``type`` (a
            built-in, ``python`` with a ``path`` option, or the name of an
            entry point in group ``readside.transforms``) and its options.

    Raises:
        ConfigError: an unknown type or bad option; the message names the
            step index, its type and the field.
    """
    steps: list[Step] = []
    for index, config in enumerate(configs):
        label = f"transforms[{index}] ({config.type})"
        options: dict[str, Any] = dict(config.model_extra or {})
        try:
            if config.type in BUILTINS:
                steps.append(Step(label, BUILTINS[config.type](options)))
            elif config.type == "python":
                steps.append(Step(label, load_path(options), user=True))
            else:
                steps.append(
                    Step(label, load_entry_point(config.type, options), user=True)
                )
        except ConfigError as exc:
            raise ConfigError(f"{label}: {exc}") from exc
    return Chain(steps)
