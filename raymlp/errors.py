"""The two kinds of failure a user sees: bad input (exit 2) and failed work (exit 1)."""

from __future__ import annotations


class RaymlpError(Exception):
    """Base class for errors raymlp reports as one clear message, without a traceback."""

    exit_code = 1


class UsageError(RaymlpError):
    """Bad usage or configuration: the user must change what they asked for."""

    exit_code = 2


class WorkFailed(RaymlpError):
    """The work was well-formed but could not be done."""

    exit_code = 1
