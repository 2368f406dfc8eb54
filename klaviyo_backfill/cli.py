"""The command line: parse options, call the core, translate errors into messages and exit codes."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from . import __version__
from .convert import Settings
from .encode import ENDPOINTS
from .errors import BackfillError, ExitCode
from .job import Job, parse_when, resolve_inputs
from .layout import builtin_layouts
from .pipeline import Filters
from .report import preview, summary_table
from .run import dry_run
from .values import zone

FORMATS = sorted(builtin_layouts())


def _edge(func: Callable[..., int]) -> Callable[..., None]:
    """The one place errors become messages: no traceback ever reaches a user."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            code = func(*args, **kwargs)
        except BackfillError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(int(exc.exit_code))
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            sys.exit(int(ExitCode.INTERRUPTED))
        sys.exit(int(code))

    return wrapper


def _default_failures(paths: list[str]) -> str:
    stem = Path(paths[0].rstrip("/")).stem or "export"
    return f"{stem}.failures.jsonl"


@click.group()
@click.version_option(__version__, prog_name="klaviyo-backfill")
def main() -> None:
    """Import a shop's past orders into Klaviyo as Placed Order, Ordered Product,
    Fulfilled/Cancelled/Refunded Order events."""


def input_options(func: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.argument("paths", nargs=-1, required=True, type=click.Path()),
        click.option("--format", "fmt", type=click.Choice(FORMATS), help="Force a reader."),
        click.option("--mapping", type=click.Path(), help="A layout file (TOML) for any export."),
        click.option("--encoding", help="Text encoding of the files (default UTF-8, BOM or not)."),
        click.option(
            "--timezone",
            "tz",
            default="UTC",
            show_default=True,
            help="IANA zone for times without an offset.",
        ),
        click.option("--currency", help="Currency for exports without a currency column."),
        click.option("--since", help="Only orders at or after this date."),
        click.option("--until", help="Only orders before this date."),
        click.option("--limit", type=click.IntRange(min=1), help="Only the first N orders."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def build_job(
    paths: tuple[str, ...],
    fmt: str | None,
    mapping: str | None,
    encoding: str | None,
    tz: str,
    currency: str | None,
    since: str | None,
    until: str | None,
    limit: int | None,
    **extra: Any,
) -> Job:
    zone_info = zone(tz)
    inputs, texts = resolve_inputs(list(paths), fmt, mapping, encoding)
    filters = Filters(
        parse_when(since, "--since", zone_info), parse_when(until, "--until", zone_info), limit
    )
    settings = Settings(timezone=zone_info, currency=currency.upper() if currency else None)
    return Job(inputs=inputs, settings=settings, filters=filters, layout_texts=texts, **extra)


@main.command()
@input_options
@click.option("--endpoint", type=click.Choice(ENDPOINTS), default="bulk", show_default=True)
@click.option("--dry-run", is_flag=True, help="Read, map and encode everything; send nothing.")
@click.option(
    "--output", type=click.Path(), help="Write every request body as a JSON line ('-': stdout)."
)
@click.option(
    "--failures",
    type=click.Path(),
    help="Where rejected orders go (JSON lines). [default: <export>.failures.jsonl]",
)
@click.option(
    "--trigger-flows", is_flag=True, help="Let these events trigger flows (no backfill flag)."
)
@click.option(
    "--revision", default="2026-07-15", show_default=True, help="Klaviyo API revision header."
)
@click.option(
    "--preview",
    "preview_count",
    default=1,
    show_default=True,
    help="Request bodies shown by --dry-run.",
)
@_edge
def send(**kw: Any) -> int:
    """Send the orders in PATHS (files or folders) to Klaviyo."""
    paths = kw["paths"]
    job = build_job(
        kw["paths"], kw["fmt"], kw["mapping"], kw["encoding"], kw["tz"], kw["currency"],
        kw["since"], kw["until"], kw["limit"],
        endpoint=kw["endpoint"], backfill=not kw["trigger_flows"], revision=kw["revision"],
        output=kw["output"], failures=kw["failures"] or _default_failures(list(paths)),
    )  # fmt: skip
    console = Console(stderr=kw["output"] == "-")
    if kw["dry_run"]:
        stats, first, failed = dry_run(job, kw["preview_count"])
        if first and kw["preview_count"]:
            preview(console, job.endpoint, [r.body for r in first])
        console.print(summary_table(stats, "Dry run: nothing was sent"))
        if failed:
            console.print(f"{failed} rejected order(s) written to {job.failures}")
        return ExitCode.REJECTED if stats.orders_rejected else ExitCode.OK
    raise NotImplementedError
