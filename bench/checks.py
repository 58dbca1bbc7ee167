"""Checks for values a user writes: the settings of a grid and of a training recipe.

A check takes a value as YAML parsed it and returns the value to keep, or
raises ``ValueError("expected ..., got <value>")``; the caller prefixes the key
path (``matrix.cardinality[1]: ``, ``train: lr: ``) and turns it into a
:class:`bench.errors.GridError` or a one-line user error.

The grid loader and the recipe share these so that one value means one thing
in both places. Two rules hold throughout, because Python's ``True == 1``
would otherwise let a YAML ``true`` pass as the integer 1 (and ``1`` as
``true``):

* a bool is never a number or an integer;
* a bool matches a choice only when a bool is itself among the choices.

A refused value is printed with :func:`shown`, a repr of bounded size and
cost, which every ``got ...`` of a message about user input uses.

This module sits at the bottom layer (beside :mod:`bench.errors`) and imports
nothing from the harness, so every layer may use it.
"""
from __future__ import annotations

import math
import reprlib
from typing import Any, Callable

Check = Callable[[Any], Any]


def is_number(v: Any) -> bool:
    """Whether ``v`` is a finite int or float (not a bool: YAML's ``true`` is not 1)."""
    return not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)


class _Bounded(reprlib.Repr):
    """A repr that reads a bounded part of a value: a few elements per level, a few levels deep."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel, self.maxlist, self.maxdict, self.maxstring, self.maxother = 3, 4, 4, 40, 40

    def repr_int(self, x: int, level: int) -> str:
        # repr() itself refuses an int of more than 4,300 digits (ValueError); its size says enough
        return repr(x) if x.bit_length() <= 128 else f"<an integer of about {int(x.bit_length() * 0.30103) + 1} digits>"

    def repr_str(self, x: str, level: int) -> str:
        return repr(x) if len(x) <= self.maxstring else repr(x[:self.maxstring]) + "..."


_BOUNDED = _Bounded()


def shown(value: Any, limit: int = 120) -> str:
    """``value`` as a message shows it (``got {shown(v)}``): a repr of bounded size and cost.

    A YAML alias bomb makes a value whose full repr would need gigabytes; a 5,000-digit integer
    has no repr at all. Both, and any long value, come out as a short prefix.
    """
    text = _BOUNDED.repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _accepting(accepts: Callable[[Any], bool], expected: str) -> Check:
    """A check that keeps the values ``accepts`` allows, as written, and otherwise says what was ``expected``."""
    def check(v: Any) -> Any:
        if not accepts(v):
            raise ValueError(f"expected {expected}, got {shown(v)}")
        return v
    return check


def integer(minimum: int) -> Check:
    """An int of at least ``minimum``.

    Floats are refused even when whole (``2.0``): counts and sizes are written
    as integers, and a float would reach the cell id's hash as ``2.0``, not ``2``.
    """
    return _accepting(lambda v: not isinstance(v, bool) and isinstance(v, int) and v >= minimum,
                      f"an integer >= {minimum}")


def number(low: float, high: float = math.inf, low_open: bool = False, high_open: bool = False) -> Check:
    """A finite int or float between ``low`` and ``high``; ``*_open`` leaves that bound out.

    The value comes back as written (an int stays an int), so a check never
    changes what is hashed into a cell id; a caller that wants floats converts.
    """
    if high == math.inf:
        expected = f"a number {'>' if low_open else '>='} {low:g}"
    else:
        expected = f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    return _accepting(lambda v: is_number(v) and (v > low if low_open else v >= low)
                      and (v < high if high_open else v <= high), expected)


# true or false; 0, 1 and strings such as "yes" are refused.
boolean: Check = _accepting(lambda v: isinstance(v, bool), "true or false")


def choice(*allowed: Any) -> Check:
    """One of ``allowed``, compared by value and by bool-ness (``True`` is not ``1``, ``0`` is not ``False``)."""
    return _accepting(lambda v: any(v == a and isinstance(v, bool) == isinstance(a, bool) for a in allowed),
                      "one of " + ", ".join(_as_written(a) for a in allowed))


def optional(check: Check) -> Check:
    """``check``, or ``None`` (YAML's ``null``: "not set, use the default")."""
    return lambda v: None if v is None else check(v)


def auto(check: Check) -> Check:
    """The string ``auto`` (resolved later, per device), or a value ``check`` accepts.

    A refusal names ``auto`` as an option: ``expected auto or an integer >= 1``.
    """
    def checked(v: Any) -> Any:
        if isinstance(v, str) and v == "auto":
            return v
        try:
            return check(v)
        except ValueError as e:
            raise ValueError(str(e).replace("expected ", "expected auto or ", 1)) from None
    return checked


def _as_written(value: Any) -> str:
    """A choice as the user writes it in YAML: ``true``/``false``, not Python's ``True``/``False``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
