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
