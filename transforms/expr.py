"""The expression language of the ``filter`` and ``compute`` transforms.

It lives in :mod:`pipeline.expr`, on the ground floor, because the config
checks a focus's ``where`` with it too; this module keeps its name for
transforms.
"""

from __future__ import annotations

from pipeline.expr import FUNCTIONS, Expression, compile_expression

__all__ = ["FUNCTIONS", "Expression", "compile_expression"]
