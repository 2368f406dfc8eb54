"""Live progress on stderr while sending; silent when stderr is no terminal or with --quiet."""

from __future__ import annotations

from types import TracebackType

from rich import progress as rp
from rich.console import Console

from .klaviyo.client import SendStats
from .summary import Stats

__all__ = ["Progress"]


class Progress:
    def __init__(self, console: Console, enabled: bool = True) -> None:
        err = Console(stderr=True)
        self.enabled = enabled and err.is_terminal
        self.bar = rp.Progress(
            rp.TextColumn("[bold]events"),
            rp.BarColumn(bar_width=24),
            rp.MofNCompleteColumn(),
            rp.TaskProgressColumn(),
            rp.TimeRemainingColumn(),
            rp.TextColumn("{task.fields[line]}"),
            console=err,
            disable=not self.enabled,
            refresh_per_second=4,
        )
        self.task = self.bar.add_task("send", total=None, line="")
        self.started = False

    def __enter__(self) -> Progress:
        return self  # the bar starts with the first update: after any prompt for the key

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.started:
            self.bar.__exit__(kind, exc, tb)

    def update(self, stats: Stats, send: SendStats) -> None:
        if not self.enabled:
            return
        if not self.started:
            self.bar.start()
            self.started = True
        done = sum(send.events_sent.values()) + send.events_rejected
        total = stats.estimated_events()
        line = (
            f"orders {stats.orders_read:,} · retries {send.retries} · "
            f"throttled {send.throttled} · rejected {send.events_rejected + stats.orders_rejected}"
        )
        self.bar.update(self.task, completed=done, total=max(total, done), line=line)
