"""Reading a text file as UTF-8, with the file (and the line of a bad byte) in its errors.

The one place for it: job files, env files, cluster files and preprocessing modules all read this way, and
each caller turns a `TextFileError` into its own error type (`ConfigIssue`s, `UsageError`) unchanged.
"""

from __future__ import annotations

import os
from pathlib import Path


class TextFileError(Exception):
    """A text file that cannot be used: `where` is FILE, or FILE:LINE for a byte that is not UTF-8;
    `problem` says why. `str()` is `where: problem`."""

    def __init__(self, where: str, problem: str):
        super().__init__(f"{where}: {problem}")
        self.where = where
        self.problem = problem


def read_bytes(
    path: str | os.PathLike[str], label: str | None = None, *, what: str = "file", it: str | None = None
) -> bytes:
    """The file's bytes; `TextFileError(label, "no such WHAT")` when it is missing,
    `(label, "cannot read IT: reason")` when it cannot be read (IT defaults to "the WHAT")."""
    label = str(path) if label is None else label
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise TextFileError(label, f"no such {what}") from None
    except OSError as error:
        raise TextFileError(label, f"cannot read {it or f'the {what}'}: {error.strerror}") from None


def decode_utf8(data: bytes, label: str) -> str:
    """`data` as UTF-8 text; `TextFileError("label:LINE", ...)` naming the line of the first bad byte."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise TextFileError(f"{label}:{line}", "the file is not UTF-8 text") from None


def read_utf8(path: str | os.PathLike[str], label: str | None = None, *, what: str = "file") -> str:
    """`read_bytes` then `decode_utf8`: the file's text, or a `TextFileError` saying where and why."""
    label = str(path) if label is None else label
    return decode_utf8(read_bytes(path, label, what=what), label)
