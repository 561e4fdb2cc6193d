"""`python -m raymlp` is the `raymlp` command."""

from raymlp.cli import entry

entry()
