"""`status` without a path: every job in the state folder, one block each, with the command
that continues it (state/locate.py finds them; the checkpoint records what is shown)."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ..state.checkpoint import Ledger
from ..state.locate import archived, failures_beside, restarted
from ..state.locate import saved_over as saved_over_files
from .terminal import _left, _when

__all__ = [
    "continuation_lines",
    "continue_with",
    "earlier_jobs",
    "earlier_lines",
    "jobs_report",
    "saved_over",
]


def _exports(ledger: Ledger) -> str:
    try:
        inputs = json.loads(ledger.get("inputs") or "[]")
    except ValueError:
        inputs = []
    return ", ".join(str(p) for p in inputs) or "(not recorded)"


def _sent(ledger: Ledger) -> str:
    """`2,125 orders sent; 375 orders rejected (not sent); left: nothing`, as `status PATH`
    words them, with the events Klaviyo rejected only where there are some."""
    counts = ledger.counts()
    orders, events = ledger.rejected_apart()
    said = [f"{counts.get('sent', 0):,} orders sent"]
    if orders:
        said.append(f"{orders:,} orders rejected (not sent)")
    if events:
        said.append(
            f"{events:,} events rejected by Klaviyo (in {counts.get('rejected', 0):,} orders)"
        )
    return "; ".join([*said, f"left: {_left(ledger)}"])


def continue_with(ledger: Ledger) -> tuple[str, str | None]:
    """(what it does, the command) that continues the job: --resume while it is unfinished;
    once finished, the same command without it sends a later export saved at the same path.
    An unfinished job whose export was saved over since (a later export) is not continued:
    the send refuses it (pipeline/session.py), and the command is the one that refusal
    prints, with --restart. The command stands alone on its line, to be copied whole."""
    command = ledger.get("command")
    if ledger.state == "finished" and command:
        return ("Nothing left; a later export saved there is sent with",
                command.removesuffix(" --resume"))  # fmt: skip
    if command and saved_over(ledger):
        return ("The export changed since this job began (a later export saved over\n"
                "it?); send it as a new job with", restarted(command))  # fmt: skip
    return "Continue with", command or None


def saved_over(ledger: Ledger) -> bool:
    """Whether the files of this unfinished job are no longer those it began with (what
    the send recorded of them), while no process is sending it."""
    return saved_over_files(ledger.get("inputs"), ledger.get("files_print")) and not (
        ledger.runner_alive()
    )


def earlier_jobs(path: Path) -> list[dict[str, object]]:
    """The jobs this one replaced at its path (archived: another window, a --restart, a later
    export saved over it), oldest first: what each sent and rejected, and its failures file
    (kept beside it) where it has one. `verify` still counts what they sent."""
    out: list[dict[str, object]] = []
    for old in archived(path):
        ledger = Ledger(old, read_only=True)
        try:
            failures = failures_beside(old)
            out.append({
                "window": ledger.get("window") or "every order",
                "orders_sent": ledger.counts().get("sent", 0),
                "orders_rejected": ledger.rejected_apart()[0],
                "last_run": _when(ledger.get("ended")) or _when(ledger.get("started")),
                "checkpoint": str(old),
                "failures": str(failures) if failures.exists() else None,
            })  # fmt: skip
        finally:
            ledger.close()
    return out


def earlier_lines(path: Path) -> str | None:
    """`Earlier jobs of this export`, a line each, with its failures file on its own line."""
    jobs = earlier_jobs(path)
    if not jobs:
        return None
    lines = ["Earlier jobs of this export (archived; verify counts what they sent):"]
    for job in jobs:
        lines.append(f"  {job['window']} (last run {job['last_run'] or 'never'}):")
        lines.append(f"    {job['orders_sent']:,} orders sent; "
                     f"{job['orders_rejected']:,} orders rejected (not sent)")  # fmt: skip
        if job["failures"]:
            lines.append(f"    its failures file:\n      {job['failures']}")
    return "\n".join(lines)


def continuation_lines(ledger: Ledger) -> str:
    """`Continue with:` and the command on a line of its own, as `status` prints them."""
    label, command = continue_with(ledger)
    return f"{label}:\n  {command or '(not recorded: a run of an earlier version)'}"


def jobs_report(console: Console, found: list[tuple[Path, Ledger]], folder: Path) -> None:
    """Every job, one block each: a table of what it is and where it stands (account,
    window, state, counts, last run), then its export, checkpoint, failures file and the
    command that continues it, each on a line of its own: a path or a command is never
    folded mid-word, whatever the width."""
    console.print(f"Jobs in {folder} ({len(found)})", soft_wrap=True, highlight=False,
                  markup=False)  # fmt: skip
    for path, ledger in found:
        console.print()  # a blank line sets each job apart
        console.print(_job_table(ledger))
        for label, value in (("Export", _exports(ledger)), ("Checkpoint file", str(path)),
                             ("Failures file", ledger.get("failures") or "(not recorded)")):  # fmt: skip
            console.print(f"{label}:\n  {value}", soft_wrap=True, highlight=False, markup=False)
        earlier = earlier_lines(path)
        if earlier:
            console.print(earlier, soft_wrap=True, highlight=False, markup=False)
        console.print(continuation_lines(ledger), soft_wrap=True, highlight=False, markup=False)


def _job_table(ledger: Ledger) -> Table:
    table = Table(show_header=False, box=None, padding=(0, 1))
    table.add_column("what", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    last = _when(ledger.get("ended")) or _when(ledger.get("started")) or "never"
    table.add_row("Account", ledger.get("account") or "(not recorded)")
    if ledger.get("store"):
        table.add_row("Store", ledger.get("store"))
    table.add_row("Window", ledger.get("window") or "every order")
    table.add_row("State", ledger.condition())
    table.add_row("Orders", _sent(ledger))
    table.add_row("Last run", last)
    return table
