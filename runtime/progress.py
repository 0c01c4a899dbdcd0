"""What a running search shows: a live rich display in a terminal (trial, generation,
best so far, ETA), one plain line per finished trial anywhere else (CI logs, pipes)."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class Reporter:
    def __init__(self, console: Console | None = None):
        self.console = console or Console(stderr=True, highlight=False, soft_wrap=True)
        self.live = self.console.is_terminal
        self._progress = None

    def start(self, search) -> None:
        trials = search.store.trials()
        self.total = search.config.trials
        self.count = sum(t.status in ("done", "failed") for t in trials)
        self.best = max((t.val_acc for t in trials if t.status == "done"), default=None)
        self.started, self.count_at_start = time.monotonic(), self.count
        if self.count:
            self.console.print(f"resuming: {self.count} of {self.total} trials already finished")
        if self.live:
            self._progress = Progress(TextColumn("[bold]search"), BarColumn(), MofNCompleteColumn(),
                                      TextColumn("{task.fields[status]}"), TimeElapsedColumn(),
                                      TextColumn("ETA"), TimeRemainingColumn(), console=self.console,
                                      transient=False)
            self._task = self._progress.add_task("search", total=self.total, completed=self.count,
                                                 status=self._status(None))
            self._progress.start()

    def note(self, text: str) -> None:
        """A line about the search as a whole (a supernet epoch, a ranking)."""
        self.console.print(text)

    def finished(self, search, trial) -> None:
        self.count += 1
        if trial.status == "done" and (self.best is None or trial.val_acc > self.best):
            self.best = trial.val_acc
        if self._progress:
            self._progress.update(self._task, completed=self.count, status=self._status(trial))
            return
        result = (f"val_acc {trial.val_acc:.4f}  params {trial.params:,}  MACs {trial.macs:,}"
                  if trial.status == "done" else f"failed: {trial.reason}")
        self.console.print(f"trial {trial.id} ({self.count}/{self.total}) {result}  "
                           f"best {self.best or 0:.4f}  ETA {self._eta()}")

    def stop(self) -> None:
        if self._progress:
            self._progress.stop()

    def _status(self, trial) -> str:
        generation = trial.extra.get("generation") if trial else None
        shown = f"gen {generation}  " if generation is not None else ""
        return f"{shown}best val {self.best:.4f}" if self.best is not None else f"{shown}best val -"

    def _eta(self) -> str:
        done_here = self.count - self.count_at_start
        if not done_here:
            return "-"
        seconds = (time.monotonic() - self.started) / done_here * (self.total - self.count)
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
