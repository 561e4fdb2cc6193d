"""What every stage receives: the job, where state lives, the catalog, and a place to report."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from raymlp.config import LoadedJob
from raymlp.storage import Storage


class Reporter:
    """Stage progress on stderr: rich on a terminal, plain lines in a pipe."""

    def __init__(self, quiet: bool = False):
        from rich.console import Console

        self.console = Console(stderr=True, highlight=False)
        self.quiet = quiet

    def info(self, message: str) -> None:
        if not self.quiet:
            self.console.print(message, markup=False, soft_wrap=True)

    def stage(self, name: str, detail: str) -> None:
        if not self.quiet:
            self.console.print(f"[bold]{name:>9}[/bold]  {detail}", soft_wrap=True)


@dataclass
class StageContext:
    """Shared by the stages of one run."""

    job: LoadedJob
    storage: Storage
    catalog: Any
    run_id: str
    reporter: Reporter
    results: dict[str, Any] = field(default_factory=dict)

    @property
    def config(self):
        return self.job.config
