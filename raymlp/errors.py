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


def raised_in_a_worker(error: BaseException) -> RaymlpError | None:
    """The WorkFailed or UsageError a Ray worker raised inside `error`, raised again as itself, with
    its own message; None when there is none. Ray passes a worker's exception on as a RayTaskError
    whose text holds the worker's traceback (Ray Data wraps it in a UserCodeException, whose chain
    does not survive the trip), so it is found there as its line `raymlp.errors.WorkFailed: ...`:
    the first one, the exception the worker raised first."""
    import re

    for cause in (error, getattr(error, "cause", None), error.__cause__):
        if isinstance(cause, RaymlpError):
            return cause
    found = re.search(r"^raymlp\.errors\.(WorkFailed|UsageError): (.+)$", str(error), re.MULTILINE)
    if found is None:
        return None
    return (WorkFailed if found.group(1) == "WorkFailed" else UsageError)(found.group(2).strip())
