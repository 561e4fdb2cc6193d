"""The `raymlp` command line: a thin Typer app over the Python API."""

from __future__ import annotations

import sys

from . import env_commands, launch_commands, monitor_commands, schedule_commands  # noqa: F401  (they add their commands to app)
from .app import app


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, turning raymlp errors into one message and an exit code."""
    from raymlp import settings
    from raymlp.errors import RaymlpError
    from raymlp.verbosity import quiet_libraries

    argv = _take_verbose(sys.argv[1:] if argv is None else list(argv))
    quiet_libraries()
    try:
        app(args=argv, prog_name="raymlp", standalone_mode=True)
    except SystemExit as exit_:
        return int(exit_.code or 0) if isinstance(exit_.code, int) or exit_.code is None else 1
    except RaymlpError as error:
        if settings.debug():
            raise
        from raymlp.config import ConfigError

        print(error if isinstance(error, ConfigError) else f"error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # a failure raymlp did not anticipate: one line, traceback on request
        if settings.debug():
            raise
        print(
            f"error: unexpected {type(error).__name__}: {error}\n"
            f"(this may be a raymlp bug; set {settings.DEBUG_ENV}=1 for the traceback)",
            file=sys.stderr,
        )
        return 1
    return 0


def _take_verbose(argv: list[str]) -> list[str]:
    """`-v`/`--verbose` anywhere before `--` (so `raymlp run JOB -v` works too) sets RAYMLP_VERBOSE."""
    from raymlp import settings

    end = argv.index("--") if "--" in argv else len(argv)
    flags = {"-v", "--verbose"}
    if not flags & set(argv[:end]):
        return argv
    import os

    os.environ[settings.VERBOSE_ENV] = "1"
    return [arg for arg in argv[:end] if arg not in flags] + argv[end:]


def entry() -> None:
    """Console-script wrapper."""
    sys.exit(main())
