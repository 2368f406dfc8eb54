"""The command line: parse options, call the core, translate errors into messages and exit codes."""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from . import __version__
from .checkpoint import Ledger, default_path
from .convert import Settings, earliest_for
from .encode import ENDPOINTS
from .errors import BackfillError, CheckpointError, ExitCode, OutputError, UsageError
from .job import Job, parse_when, resolve_inputs
from .layout import builtin_layouts
from .pipeline import Filters, describe
from .progress import Progress
from .report import (
    inspect_report,
    outcome_json,
    preview,
    send_summary,
    status_table,
    summary_table,
)
from .run import dry_run, inspect_job, send_job
from .send import GaveUp, SendConfig, loopback_only
from .throttle import DEFAULT_LIMITS, parse_rate_limit
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
        except BrokenPipeError:  # `... --output - | head`: the reader has what it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(int(ExitCode.OK))
        except OSError as exc:  # a file this run writes: output, failures, checkpoint
            where = f"{exc.filename}: " if exc.filename else ""
            click.echo(f"Error: {where}{exc.strerror or exc}", err=True)
            sys.exit(int(ExitCode.USAGE))
        sys.exit(int(code))

    return wrapper


def _check_writable(path: str, option: str) -> None:
    """Before any work: a file the run writes at its end must be writable then."""
    target = Path(path)
    folder = target.parent
    if target.is_dir() or not folder.is_dir() or not os.access(folder, os.W_OK):
        why = "is a folder" if target.is_dir() else f"cannot be written in {folder}"
        raise UsageError(f"{option} {path} {why}")
    if target.exists() and not os.access(target, os.W_OK):
        raise UsageError(f"{option} {path} cannot be written")


def _write_json(path: str, data: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


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
        click.option(
            "--products",
            type=click.Path(),
            help="Line items in their own JSON file, joined by order_id (BigCommerce).",
        ),
        click.option("--encoding", help="Text encoding of the files (default UTF-8, BOM or not)."),
        click.option(
            "--timezone",
            "tz",
            default="UTC",
            show_default=True,
            help="IANA zone for times without an offset.",
        ),
        click.option("--currency", help="Currency for exports without a currency column."),
        click.option(
            "--since",
            help="Only orders at or after this moment; a year, month or day (2024, 2024-03, "
            "2024-03-05) from its start.",
        ),
        click.option(
            "--until",
            help="Only orders before this moment; a year, month or day (2024, 2024-03, "
            "2024-03-05) through its end.",
        ),
        click.option("--limit", type=click.IntRange(min=1), help="Only the first N orders."),
        click.option(
            "--jobs",
            type=click.IntRange(min=1),
            help="Processes that read and map a large CSV for --dry-run and inspect "
            "(default: one per core). A real send maps in one: the rate limit sets its pace.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _given(param: str) -> bool:
    """Whether the user set this option (rather than click filling in its default)."""
    ctx = click.get_current_context(silent=True)
    return ctx is not None and ctx.get_parameter_source(param) not in (
        None,
        click.core.ParameterSource.DEFAULT,
    )


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
    products: str | None = None,
    jobs: int | None = None,
    **extra: Any,
) -> Job:
    zone_info = zone(tz)
    inputs, texts = resolve_inputs(list(paths), fmt, mapping, encoding, products)
    filters = Filters(
        parse_when(since, "--since", zone_info), parse_when(until, "--until", zone_info), limit
    )
    if filters.since and filters.until and filters.since >= filters.until:
        raise UsageError(f"--since {since} is not before --until {until}: no order could pass")
    if currency and not (len(currency) == 3 and currency.isascii() and currency.isalpha()):
        raise UsageError(f"--currency {currency!r} is not an ISO 4217 code", "Write e.g. EUR.")
    # the time floor is the v3 API's, by revision; the legacy Track API sends no revision
    revision = None if extra.get("endpoint") == "legacy" else extra.get("revision")
    settings = Settings(
        timezone=zone_info,
        zone_named=_given("tz"),
        currency=currency.upper() if currency else None,
        earliest=earliest_for(revision),
    )
    return Job(
        inputs=inputs, settings=settings, filters=filters, layout_texts=texts, jobs=jobs, **extra
    )


BACKFILL_REVISION = "2026-04-15"


def _check_revision(revision: str, backfill: bool) -> None:
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}(\.[a-z0-9]+)?", revision):
        raise UsageError(f"--revision {revision!r} is not a revision", "Write e.g. 2026-07-15.")
    if backfill and revision[:10] < BACKFILL_REVISION:
        raise UsageError(
            f"--revision {revision} is older than {BACKFILL_REVISION}, the first with backfill",
            "Use a newer revision: without backfill, old orders would trigger your flows.",
        )


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
@click.option(
    "--api-key",
    envvar="KLAVIYO_API_KEY",
    show_envvar=True,
    help="Private API key (pk_...); prompted for when absent.",
)
@click.option(
    "--public-key",
    envvar="KLAVIYO_PUBLIC_KEY",
    show_envvar=True,
    help="Public key (site id), for --endpoint legacy.",
)
@click.option(
    "--base-url",
    envvar="KLAVIYO_BASE_URL",
    show_envvar=True,
    default="https://a.klaviyo.com",
    show_default=True,
)
@click.option(
    "--rate-limit",
    help="Client-side limits, e.g. '10/s,150/m' (default: Klaviyo's for the endpoint).",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 200),
    help="Requests in flight at once. [default: 5 bulk, 50 single]",
)
@click.option(
    "--checkpoint",
    type=click.Path(),
    help="Checkpoint file. [default: .klaviyo-backfill/<export>-<hash>.sqlite]",
)
@click.option("--resume", is_flag=True, help="Continue an unfinished run from its checkpoint.")
@click.option("--restart", is_flag=True, help="Discard the checkpoint and start over.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--summary-json", type=click.Path(), help="Write the final summary as JSON.")
@_edge
def send(**kw: Any) -> int:
    """Send the orders in PATHS (files or folders) to Klaviyo."""
    paths = kw["paths"]
    _check_revision(kw["revision"], not kw["trigger_flows"])
    if kw["summary_json"]:
        _check_writable(kw["summary_json"], "--summary-json")
    if kw["rate_limit"]:
        parse_rate_limit(kw["rate_limit"])
    job = build_job(
        kw["paths"], kw["fmt"], kw["mapping"], kw["encoding"], kw["tz"], kw["currency"],
        kw["since"], kw["until"], kw["limit"], kw["products"], kw["jobs"],
        endpoint=kw["endpoint"], backfill=not kw["trigger_flows"], revision=kw["revision"],
        output=kw["output"], failures=kw["failures"] or _default_failures(list(paths)),
    )  # fmt: skip
    console = Console(stderr=kw["output"] == "-")
    if kw["dry_run"]:
        stats, first, failed = dry_run(job, kw["preview_count"])
        if first and kw["preview_count"]:
            preview(console, job.endpoint, [r.body for r in first])
        console.print(summary_table(stats, "Dry run: nothing was sent"))
        if kw["summary_json"]:
            _write_json(kw["summary_json"], describe(stats) | {"dry_run": True})
        if failed:
            console.print(f"{failed} rejected order(s) written to {job.failures}")
        return ExitCode.REJECTED if stats.orders_rejected else ExitCode.OK
    return _real_send(job, console, kw)


def _api_key(kw: dict[str, Any]) -> str | None:
    if kw["endpoint"] == "legacy":
        if not kw["public_key"]:
            raise UsageError(
                "--endpoint legacy needs a public key: set KLAVIYO_PUBLIC_KEY or pass --public-key"
            )
        return None
    key: str | None = kw["api_key"]
    if not key and sys.stdin.isatty():
        key = click.prompt("Klaviyo private API key", hide_input=True)
    if not key:
        raise UsageError(
            "no API key: set KLAVIYO_API_KEY (a private key with the events:write scope)"
        )
    return key


def _resume_command() -> str:
    """The command line that continues this run, without the key and with --resume."""
    args, skip = [], False
    for arg in sys.argv[1:]:
        if skip:
            skip = False
            continue
        if arg in ("--api-key", "--restart", "--resume"):
            skip = arg == "--api-key"
            continue
        if arg.startswith("--api-key="):
            continue
        args.append(shlex.quote(arg))
    return " ".join(["klaviyo-backfill", *args, "--resume"])


def _refuse_if_running(ledger: Ledger, path: Path) -> None:
    """Two runs on one checkpoint would send the same orders twice over."""
    if ledger.runner_alive():
        pid = ledger.get("pid")
        ledger.close()
        raise CheckpointError(
            f"process {pid} is sending with checkpoint {path} right now",
            "Let it finish (or stop it with Ctrl-C) before another run on the same export.",
        )


def _open_ledger(job: Job, kw: dict[str, Any], console: Console) -> Ledger | ExitCode:
    """The checkpoint to send with, or the exit code when there is nothing left to send."""
    if kw["resume"] and kw["restart"]:
        raise UsageError("--resume and --restart contradict each other: choose one")
    path = Path(kw["checkpoint"]) if kw["checkpoint"] else default_path(list(kw["paths"]))
    if kw["restart"]:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    elif not path.exists() and kw["resume"]:
        raise CheckpointError(
            f"no checkpoint at {path} to resume", "Run without --resume to start."
        )
    elif path.exists() and not kw["resume"]:
        ledger = Ledger(path)
        state, rejected = ledger.state, ledger.rejected_total()
        _refuse_if_running(ledger, path)
        ledger.close()
        if state == "finished":
            console.print(f"Nothing to do: checkpoint {path} says this export was sent completely"
                          + (f", with {rejected} rejected order(s)/event(s) (`status` reports"
                             " them)" if rejected else "")
                          + ". Use --restart to send it again.")  # fmt: skip
            return ExitCode.REJECTED if rejected else ExitCode.OK
        raise CheckpointError(
            f"an unfinished run ({state}) has a checkpoint at {path}",
            f"Continue it with: {_resume_command()}\nor start over with --restart.",
        )
    ledger = Ledger(path)
    _refuse_if_running(ledger, path)
    ledger.claim(
        job.fingerprint(),
        "endpoint, timezone, currency, since, until, revision, trigger-flows, layout",
    )
    return ledger


def _send_config(job: Job, kw: dict[str, Any]) -> SendConfig:
    loopback_only(kw["base_url"])
    endpoint = job.endpoint
    windows = parse_rate_limit(kw["rate_limit"]) if kw["rate_limit"] else DEFAULT_LIMITS[endpoint]
    concurrency = kw["concurrency"] or (5 if endpoint == "bulk" else 50)
    return SendConfig(
        base_url=kw["base_url"], endpoint=endpoint, windows=windows, api_key=_api_key(kw),
        public_key=kw["public_key"], revision=job.revision, concurrency=concurrency,
    )  # fmt: skip


def _real_send(job: Job, console: Console, kw: dict[str, Any]) -> int:
    config = _send_config(job, kw)
    ledger = _open_ledger(job, kw, console)
    if isinstance(ledger, ExitCode):
        return ledger
    progress = Progress(console, enabled=not kw["quiet"])
    try:
        with progress:
            outcome = send_job(job, config, ledger, progress.update, resume=kw["resume"])
    finally:
        ledger.close()
    console.print(send_summary(outcome))
    if kw["summary_json"]:
        _write_json(kw["summary_json"], outcome_json(outcome) | {"dry_run": False})
    failed = outcome.failures
    if failed:
        console.print(f"{failed} rejected order(s)/event(s) written to {job.failures}")
    if outcome.interrupted:
        click.echo(f"Stopped. Nothing is lost; continue with:\n  {_resume_command()}", err=True)
        return ExitCode.INTERRUPTED
    if outcome.error is not None:
        console.print(f"[red]Error:[/red] {outcome.error}")
        if isinstance(outcome.error, GaveUp | OutputError):
            click.echo(f"Continue with:\n  {_resume_command()}", err=True)
        if isinstance(outcome.error, OutputError) and outcome.error.broken_pipe:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no flush error
        return outcome.error.exit_code
    return ExitCode.REJECTED if failed else ExitCode.OK


@main.command()
@input_options
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@_edge
def inspect(as_json: bool, **kw: Any) -> int:
    """Read the exports and report what a backfill would send; send nothing."""
    stats = inspect_job(build_job(**kw))
    if as_json:
        click.echo(json.dumps(describe(stats), indent=2, ensure_ascii=False))
    else:
        inspect_report(Console(), stats)
    return ExitCode.OK


@main.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option(
    "--checkpoint", type=click.Path(), help="Checkpoint file (default: derived from PATHS)."
)
@_edge
def status(paths: tuple[str, ...], checkpoint: str | None) -> int:
    """Report a checkpoint: orders done, rejected, and the last run."""
    if not checkpoint and not paths:
        raise UsageError("give the export PATHS the run used, or --checkpoint PATH")
    path = Path(checkpoint) if checkpoint else default_path(list(paths))
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}")
    ledger = Ledger(path)
    try:
        Console().print(status_table(path, ledger))
    finally:
        ledger.close()
    return ExitCode.OK
