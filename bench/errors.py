"""Errors a user can fix: shown as one line, exit code 2, no traceback."""
from __future__ import annotations


class UserError(Exception):
    """Bad input (a grid, a CSV, a flag). The message is the whole story."""

    exit_code = 2


class GridError(UserError):
    """A grid file that cannot be run; the message names file, key path and expectation."""

    def __init__(self, path: str, keypath: str, message: str) -> None:
        where = f"{path}: {keypath}" if keypath else str(path)
        super().__init__(f"{where}: {message}")
        self.path, self.keypath, self.detail = path, keypath, message


def one_line(error: object, limit: int = 0) -> str:
    """``error`` (an exception or any text) as one line, whitespace collapsed, optionally cut to ``limit`` chars.

    The single place messages are flattened: result files keep one row per
    line, and the CLI promises one-line errors, so every copy must agree.
    """
    text = " ".join(str(error).split())
    return text[:limit] if limit > 0 else text


def os_error_text(error: OSError) -> str:
    """An OSError's reason without the path Python appends (callers name the path themselves)."""
    return error.strerror or one_line(error)
