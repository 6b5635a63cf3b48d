"""A small, safe expression language over one document.

Used by the ``filter`` and ``compute`` transforms, by a view's focus row
``filter`` and by the config's check of a focus's ``where``: it lives on the
ground floor, beside the config, so that the config can compile it
(``transforms.expr`` re-exports it for transforms).

The text is parsed with :mod:`ast` once, at start, checked against a
whitelist and compiled into nested closures; evaluating it per document walks
no syntax tree and calls no ``eval``.

Allowed: literals (str, int, float, bool, None, lists, tuples, sets), names
(the document's fields), subscripts (``tags[0]``, ``data["k"]``), comparisons
(``== != < <= > >= in not in is is not``, chained), ``and or not``,
``+ - * / // %`` and unary ``- +``, ``a if cond else b``, and calls of the
functions in :data:`FUNCTIONS`. Everything else (attributes, lambdas,
comprehensions, ``**``, keyword arguments, unknown functions) is refused at
compile time with :class:`~pipeline.errors.ConfigError`.

Evaluation errors (a missing field, a type mismatch, division by zero, a
field whose value is an unchanged TOASTed column) raise
``BadRecord("transform", ...)``, so only that record is dead-lettered.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from pipeline.errors import BadRecord, ConfigError
from pipeline.events import UNCHANGED

Doc = Mapping[str, Any]
_Fn = Callable[[Doc], Any]

MAX_LENGTH = 4000
_MISSING = object()


class _EvalError(Exception):
    """An evaluation error with a readable message (becomes BadRecord)."""


def _read(value: Any, name: str) -> Any:
    if value is UNCHANGED:
        raise _EvalError(
            f"field {name!r} is an unchanged TOASTed column whose value the event "
            "does not carry (set REPLICA IDENTITY FULL on the table, or do not "
            "use this field in expressions)"
        )
    return value


def _coalesce(*args: Any) -> Any:
    return next((a for a in args if a is not None), None)


def _get(doc: Doc) -> Callable[..., Any]:
    def get(name: str, default: Any = None) -> Any:
        if not isinstance(name, str):
            raise _EvalError(f"get(): field name must be a string, not {name!r}")
        return _read(doc.get(name, default), name)

    return get


def _lower(s: str) -> str:
    return s.lower()


def _upper(s: str) -> str:
    return s.upper()


def _strip(s: str) -> str:
    return s.strip()


def _decimal(v: Any) -> Decimal:
    return Decimal(v if isinstance(v, str | int) else str(v))


#: Functions an expression may call. ``get(name, default)`` reads a field
#: whose name is not an identifier or that may be absent.
FUNCTIONS: dict[str, Callable[..., Any]] = {
    "lower": _lower,
    "upper": _upper,
    "strip": _strip,
    "len": len,
    "str": str,
    "int": int,
    "float": float,
    "bool": bool,
    "decimal": _decimal,
    "round": round,
    "abs": abs,
    "min": min,
    "max": max,
    "coalesce": _coalesce,
}
_DOC_FUNCTIONS = {"get": _get}
_CONSTANT_TYPES = (str, int, float, bool, type(None))

_BINOPS: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.Not: operator.not_,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}
_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
    ast.Is: operator.is_,
    ast.IsNot: operator.is_not,
}


@dataclass(frozen=True)
class Expression:
    """A compiled expression; evaluate it against any number of documents.

    Attributes:
        text: the source text.
        fields: names of the document fields it reads directly.
    """

    text: str
    fields: frozenset[str]
    _fn: _Fn = field(repr=False, compare=False)

    def evaluate(self, doc: Doc) -> Any:
        """Evaluate against ``doc`` (not modified).

        Raises:
            BadRecord: reason ``transform``; the expression cannot be
                evaluated on this document.
        """
        try:
            return self._fn(doc)
        except _EvalError as exc:
            raise BadRecord("transform", f"expression {self.text!r}: {exc}") from exc
        except (ArithmeticError, ValueError, TypeError, LookupError) as exc:
            raise BadRecord(
                "transform",
                f"expression {self.text!r}: {type(exc).__name__}: {exc}",
            ) from exc


def compile_expression(text: str) -> Expression:
    """Parse and check ``text`` once.

    Raises:
        ConfigError: the text is not a valid, allowed expression.
    """
    if not isinstance(text, str) or not text.strip():
        raise ConfigError("expression must be a non-empty string")
    if len(text) > MAX_LENGTH:
        raise ConfigError(f"expression longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise ConfigError(f"expression {text!r}: invalid syntax: {exc}") from exc
    compiler = _Compiler(text)
    try:
        fn = compiler.node(tree.body)
    except RecursionError as exc:
        raise ConfigError(f"expression {text!r}: nested too deeply") from exc
    return Expression(text, frozenset(compiler.fields), fn)


class _Compiler:
    def __init__(self, text: str) -> None:
        self.text = text
        self.fields: set[str] = set()

    def refuse(self, node: ast.AST, what: str) -> ConfigError:
        col = getattr(node, "col_offset", 0)
        return ConfigError(f"expression {self.text!r}: {what} (at column {col + 1})")

    def node(self, node: ast.expr) -> _Fn:
        method = getattr(self, f"_{type(node).__name__}", None)
        if method is None:
            raise self.refuse(node, f"{type(node).__name__} is not allowed")
        fn: _Fn = method(node)
        return fn

    def _Constant(self, node: ast.Constant) -> _Fn:
        if not isinstance(node.value, _CONSTANT_TYPES):
            raise self.refuse(node, f"constant {node.value!r} is not allowed")
        value = node.value
        return lambda doc: value

    def _Name(self, node: ast.Name) -> _Fn:
        name = node.id
        if name.startswith("__"):
            raise self.refuse(node, f"name {name!r} is not allowed")
        if name in FUNCTIONS or name in _DOC_FUNCTIONS:
            raise self.refuse(node, f"function {name!r} must be called")
        self.fields.add(name)

        def read(doc: Doc) -> Any:
            value = doc.get(name, _MISSING)
            if value is _MISSING:
                raise _EvalError(f"unknown field {name!r}")
            return _read(value, name)

        return read

    def _sequence(self, node: ast.List | ast.Tuple | ast.Set) -> list[_Fn]:
        return [self.node(e) for e in node.elts]

    def _List(self, node: ast.List) -> _Fn:
        items = self._sequence(node)
        return lambda doc: [f(doc) for f in items]

    def _Tuple(self, node: ast.Tuple) -> _Fn:
        items = self._sequence(node)
        return lambda doc: tuple(f(doc) for f in items)

    def _Set(self, node: ast.Set) -> _Fn:
        items = self._sequence(node)
        return lambda doc: {f(doc) for f in items}

    def _Subscript(self, node: ast.Subscript) -> _Fn:
        if isinstance(node.slice, ast.Slice):
            raise self.refuse(node, "slices are not allowed")
        target, index = self.node(node.value), self.node(node.slice)
        return lambda doc: target(doc)[index(doc)]

    def _BoolOp(self, node: ast.BoolOp) -> _Fn:
        parts = [self.node(v) for v in node.values]
        if isinstance(node.op, ast.And):

            def all_of(doc: Doc) -> Any:
                result: Any = True
                for part in parts:
                    result = part(doc)
                    if not result:
                        return result
                return result

            return all_of

        def any_of(doc: Doc) -> Any:
            result: Any = False
            for part in parts:
                result = part(doc)
                if result:
                    return result
            return result

        return any_of

    def _UnaryOp(self, node: ast.UnaryOp) -> _Fn:
        op = _UNARY.get(type(node.op))
        if op is None:
            raise self.refuse(node, f"operator {type(node.op).__name__} is not allowed")
        operand = self.node(node.operand)
        return lambda doc: op(operand(doc))

    def _BinOp(self, node: ast.BinOp) -> _Fn:
        op = _BINOPS.get(type(node.op))
        if op is None:
            raise self.refuse(node, f"operator {type(node.op).__name__} is not allowed")
        left, right = self.node(node.left), self.node(node.right)
        if isinstance(node.op, ast.Mult):
            return lambda doc: _multiply(left(doc), right(doc))
        return lambda doc: op(left(doc), right(doc))

    def _Compare(self, node: ast.Compare) -> _Fn:
        ops = []
        for cmp in node.ops:
            op = _COMPARE.get(type(cmp))
            if op is None:
                what = type(cmp).__name__
                raise self.refuse(node, f"comparison {what} is not allowed")
            ops.append(op)
        first = self.node(node.left)
        rest = [self.node(c) for c in node.comparators]

        def compare(doc: Doc) -> bool:
            left = first(doc)
            for op, part in zip(ops, rest, strict=True):
                right = part(doc)
                if not op(left, right):
                    return False
                left = right
            return True

        return compare

    def _IfExp(self, node: ast.IfExp) -> _Fn:
        test, body, orelse = (
            self.node(node.test),
            self.node(node.body),
            self.node(node.orelse),
        )
        return lambda doc: body(doc) if test(doc) else orelse(doc)

    def _Call(self, node: ast.Call) -> _Fn:
        if not isinstance(node.func, ast.Name):
            raise self.refuse(node, "only named functions may be called")
        if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
            raise self.refuse(node, "keyword and star arguments are not allowed")
        name = node.func.id
        args = [self.node(a) for a in node.args]
        if name in _DOC_FUNCTIONS:
            bind = _DOC_FUNCTIONS[name]
            return lambda doc: bind(doc)(*(a(doc) for a in args))
        fn = FUNCTIONS.get(name)
        if fn is None:
            known = ", ".join(sorted([*FUNCTIONS, *_DOC_FUNCTIONS]))
            raise self.refuse(node, f"unknown function {name!r} (known: {known})")
        return lambda doc: fn(*(a(doc) for a in args))


def _multiply(left: Any, right: Any) -> Any:
    if isinstance(left, str | list | tuple) or isinstance(right, str | list | tuple):
        raise _EvalError("repeating strings or lists with * is not allowed")
    return left * right
