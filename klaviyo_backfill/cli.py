"""The command line: parse options, call a command (commands/), render, and translate errors into
messages and exit codes. No business rule lives here.

The core, rich and httpx are imported inside the commands, so `--help` starts fast.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import click

from . import __version__
from .commands.edge import ask_key as _ask_key
from .commands.edge import edge as _edge
from .commands.edge import quiet_stdout as _quiet_stdout
from .commands.edge import resume_command as _resume_command
from .commands.outputs import (
    check_writable,
    checkpoints_shown,
    configure_logging,
    refuse_inputs,
    write_json,
    write_report,
)
from .errors import (
    CheckpointError,
    ExitCode,
    GaveUp,
    OutputError,
    SendError,
    Stopped,
    UsageError,
)
from .options import (
    DEFAULT_BASE_URL,
    DEFAULT_REVISION,
    ENDPOINT_NAMES,
    PROFILE_ATTRIBUTES,
    InputOptions,
    SendOptions,
    format_names,
)

if TYPE_CHECKING:
    from rich.console import Console

    from .results import DryRun, Finished, SendOutcome, Verification


WORKFLOW = ("inspect", "send", "status", "verify", "preflight")  # the order a merchant uses


class _Workflow(click.Group):
    """The commands in the order a merchant uses them, not alphabetically."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        rest = sorted(set(self.commands) - set(WORKFLOW))
        return [name for name in WORKFLOW if name in self.commands] + rest


@click.group(cls=_Workflow, invoke_without_command=True)
@click.version_option(__version__, prog_name="klaviyo-backfill")
@click.pass_context
def main(ctx: click.Context) -> None:
    """Start here: `klaviyo-backfill inspect EXPORT` shows what an export holds, then
    `send EXPORT --dry-run`, then `send EXPORT` (the README walks through it).

    Imports a shop's past orders into Klaviyo as Placed Order, Ordered Product and
    Fulfilled, Cancelled and Refunded Order events."""
    if ctx.invoked_subcommand is None:  # a bare `klaviyo-backfill`: the help, exit 0
        click.echo(ctx.get_help())


def input_options(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.argument("paths", nargs=-1, required=True, type=click.Path())(input_flags(func))


def input_flags(func: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--format", "fmt", type=click.Choice(format_names()), help="Force a reader."),
        click.option("--layout", type=click.Path(), help="A layout file (TOML) for any export."),
        click.option(
            "--products",
            type=click.Path(),
            help="Line items in their own JSON file, joined by order_id (BigCommerce).",
        ),
        click.option("--encoding", help="Text encoding of the files (default UTF-8, BOM or not)."),
        click.option("--delimiter", help="CSV delimiter: ',' ';' 'tab'... (default: detected)."),
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
        click.option(
            "--date-order",
            type=click.Choice(["dmy", "mdy"]),
            help="How to read --since/--until in figures such as 05/01/2024: day first (dmy) "
            "or month first (mdy). Without it a date that could be either is refused.",
        ),
        click.option("--limit", type=click.IntRange(min=1), help="Only the first N orders."),
        click.option(
            "--store",
            help="The shop these orders come from, where several send to one account: their "
            "ids and the account's ledger then key each order by store and id.",
        ),
        click.option(
            "--jobs",
            type=click.IntRange(min=1),
            help="Processes that read a large CSV: to map it for --dry-run and inspect, and "
            "before a send to find each customer's latest order and what the account holds "
            "(default: one per core). A send maps in one: the rate limit sets its pace.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def key_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The key, where it goes, and the API revision: every command that talks to Klaviyo."""
    options = [
        click.option(
            "--revision",
            default=DEFAULT_REVISION,
            show_default=True,
            help="Klaviyo API revision header.",
        ),
        click.option(
            "--api-key",
            envvar="KLAVIYO_API_KEY",
            show_envvar=True,
            help="Private API key (pk_...); prompted for when absent.",
        ),
        click.option(
            "--base-url",
            envvar="KLAVIYO_BASE_URL",
            show_envvar=True,
            default=DEFAULT_BASE_URL,
            show_default=True,
            help="Where Klaviyo's API is, without /api (change it only for a test stand-in).",
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


def _on_command_line(param: str) -> bool:
    ctx = click.get_current_context(silent=True)
    return (
        ctx is not None
        and ctx.get_parameter_source(param) == click.core.ParameterSource.COMMANDLINE
    )


def _inputs(kw: dict[str, Any]) -> InputOptions:
    return InputOptions(
        paths=kw["paths"], fmt=kw["fmt"], layout=kw["layout"],
        products=kw["products"], encoding=kw["encoding"], delimiter=kw["delimiter"],
        timezone=kw["tz"],
        timezone_given=_given("tz"), currency=kw["currency"], since=kw["since"],
        until=kw["until"], date_order=kw["date_order"], limit=kw["limit"], jobs=kw["jobs"],
        store=kw["store"],
    )  # fmt: skip


def _mode(kw: dict[str, Any]) -> str:
    if kw["resume"] and kw["restart"]:
        raise UsageError("--resume and --restart contradict each other: choose one")
    return "resume" if kw["resume"] else "restart" if kw["restart"] else "new"


def _send_options(kw: dict[str, Any]) -> SendOptions:
    return SendOptions(
        inputs=_inputs(kw), endpoint=kw["endpoint"], trigger_flows=kw["trigger_flows"],
        revision=kw["revision"], output=kw["output"], failures=kw["failures"],
        base_url=kw["base_url"], api_key=kw["api_key"], public_key=kw["public_key"],
        rate_limit=kw["rate_limit"], concurrency=kw["concurrency"],
        checkpoint=kw["checkpoint"], mode=_mode(kw),  # type: ignore[arg-type]
        allow_overlap=kw["allow_overlap"], resend=kw["resend"],
        profile_attributes=kw["profile_attributes"], tuning=kw["tuning"], repair=kw["repair"],
    )  # fmt: skip


ENDPOINT_HELP = (
    "Klaviyo API to send to: bulk (1,000 events a request), single (one event a request) or "
    "legacy (the retired Track API, with --public-key)."
)
endpoint_option = click.option(
    "--endpoint", type=click.Choice(ENDPOINT_NAMES), default="bulk", show_default=True,
    help=ENDPOINT_HELP,
)  # fmt: skip


@main.command(short_help="Send the orders to Klaviyo (--dry-run first: nothing sent).")
@input_options
@endpoint_option
@click.option("--dry-run", is_flag=True, help="Read, map and encode everything; send nothing.")
@click.option(
    "--output", type=click.Path(), help="Write every request body as a JSON line ('-': stdout)."
)
@click.option(
    "--failures",
    type=click.Path(),
    help="Where rejected orders go (JSON lines). [default: a dry run, <export>.failures.jsonl "
    "here; a send, beside its checkpoint]",
)
@click.option(
    "--trigger-flows", is_flag=True, help="Let these events trigger flows (no backfill flag)."
)
@click.option(
    "--preview",
    "preview_count",
    type=click.IntRange(min=0),
    help="--dry-run shows the first N events in full, as sent (0: none). "
    "[default: the first event of each metric, cut short]",
)
@key_options
@click.option(
    "--public-key",
    envvar="KLAVIYO_PUBLIC_KEY",
    show_envvar=True,
    help="Public key (site id), for --endpoint legacy.",
)
@click.option(
    "--allow-overlap",
    is_flag=True,
    help="Send even where another integration's metric of the same name (Shopify's own "
    "Placed Order) already holds events in the months sent, or another API sender (the "
    "shop's own integration) holds the same orders.",
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
    help=f"Checkpoint file. [default: one per export and account in {checkpoints_shown()}]",
)
@click.option("--tuning", hidden=True, help="Limits: 'max_attempts=3,timeout=5,...'.")
@click.option(
    "--repair",
    type=click.Path(),
    help="Send only the events `verify` found missing (the file it names), same unique ids.",
)
@click.option("--resume", is_flag=True, help="Continue an unfinished run from its checkpoint.")
@click.option("--restart", is_flag=True, help="Discard the checkpoint and start over.")
@click.option(
    "--profile-attributes",
    type=click.Choice(PROFILE_ATTRIBUTES),
    default="latest",
    show_default=True,
    help="Which orders carry a customer's name and address: each customer's latest only "
    "(older orders carry identifiers), every order, or none.",
)
@click.option(
    "--resend",
    is_flag=True,
    help="Send what this Klaviyo account holds already too (Klaviyo drops repeats).",
)
@click.option(
    "--quiet",
    "-q",
    is_flag=True,
    help="No progress (a bar on a terminal, a line every 30 s in a log).",
)
@click.option(
    "--json",
    "--summary-json",
    "summary_json",
    type=click.Path(allow_dash=True),
    help="Write the final summary as JSON to FILE ('-': stdout; the table goes to stderr).",
)
@click.option(
    "--verbose", "-v", count=True, help="Log retries, waits and splits to stderr (-vv: more)."
)
@click.option("--log", "log_file", type=click.Path(), help="Write the full log to this file.")
@_edge
def send(**kw: Any) -> int:
    """Send the orders in PATHS (files or folders) to Klaviyo."""
    refuse_inputs(kw["paths"], {"--output": kw["output"], "--failures": kw["failures"],
                                "--log": kw["log_file"], "--summary-json": kw["summary_json"]})  # fmt: skip
    options = _send_options(kw)
    if _on_command_line("api_key"):
        click.echo("Warning: --api-key on the command line can be read by other users of this "
                   "machine (ps, /proc); prefer KLAVIYO_API_KEY, or leave both out to be asked.",
                   err=True)  # fmt: skip
    if kw["summary_json"]:
        check_writable(kw["summary_json"], "--summary-json")
    configure_logging(kw["verbose"], kw["log_file"])
    from .reports.terminal import console as report_console

    if options.output == "-" and kw["summary_json"] == "-":
        raise UsageError("--output - and --json - both write to stdout: give one a FILE")
    console = report_console(stderr="-" in (options.output, kw["summary_json"]))
    if kw["dry_run"]:
        return _dry_run(options, console, kw)
    return _real_send(options, console, kw)


def _dry_run(options: SendOptions, console: Console, kw: dict[str, Any]) -> int:
    from .commands.dry_run import dry_run
    from .reports.preview import preview, samples
    from .reports.terminal import describe, lit, rejections, summary_table

    result: DryRun = dry_run(options, kw["preview_count"])
    if kw["preview_count"]:
        preview(console, result.endpoint, result.samples)
    elif result.samples:
        samples(console, result.endpoint, result.samples)
    console.print(summary_table(result.stats, "Dry run: nothing was sent"))
    if kw["summary_json"]:
        write_json(kw["summary_json"], describe(result.stats) | {"dry_run": True})
    if result.failures:
        kinds = result.failure_kinds
        told = rejections(kinds.get("orders", 0), kinds.get("events", 0), kinds.get("changed", 0))
        console.print(f"{told} written to {lit(result.failures_path)}", soft_wrap=True)
    return ExitCode.REJECTED if result.stats.orders_rejected else ExitCode.OK


def _nothing_to_do(console: Console, finished: Finished) -> int:
    from .reports.terminal import lit, rejections

    told = rejections(finished.orders_rejected, finished.events_rejected)
    console.print(f"Nothing to do: checkpoint {lit(finished.path)} says this export was sent completely"
                  + (f", with {told} (`status` reports them)" if told else "")
                  + ". To send its events again (Klaviyo drops repeats), add --resend.",
                  soft_wrap=True)  # fmt: skip
    return ExitCode.OK  # nothing was asked that is not done: a script goes on


def _real_send(options: SendOptions, console: Console, kw: dict[str, Any]) -> int:
    from .commands.send import send
    from .reports.progress import Progress
    from .reports.terminal import held_elsewhere, lit, outcome_json, send_summary
    from .results import SendOutcome

    progress = Progress(enabled=not kw["quiet"])
    with progress:
        outcome = send(options, progress, _ask_key, lambda m: click.echo(m, err=True))
    if not isinstance(outcome, SendOutcome):
        return _nothing_to_do(console, outcome)
    refused = isinstance(outcome.error, SendError) and not outcome.send.acknowledged
    unread = outcome.interrupted and not outcome.stats.orders_read  # stopped before reading
    if not (refused or unread):  # (a refused key before any answer: the error alone)
        console.print(send_summary(outcome))
    if (held := held_elsewhere(outcome.stats)) is not None:
        console.print(lit(held), soft_wrap=True)
    if kw["summary_json"]:
        try:
            write_json(kw["summary_json"], outcome_json(outcome) | {"dry_run": False})
        except UsageError as exc:  # a full disk: the send is over, as the summary above says
            raise UsageError(exc.message, "The send itself ended as reported above (the "
                             "checkpoint holds it); only this file is missing.") from None  # fmt: skip
    return _send_exit(console, outcome)


def _send_exit(console: Console, outcome: SendOutcome) -> int:
    from .reports.terminal import lit, rejections

    failed = outcome.failures
    if failed:
        kinds = outcome.failure_kinds
        told = rejections(kinds.get("orders", 0), kinds.get("events", 0), kinds.get("changed", 0))
        console.print(f"{told} written to {lit(outcome.failures_path)}", soft_wrap=True)
    then = outcome.continuation or _resume_command()
    if outcome.interrupted:
        click.echo(f"Stopped. Nothing is lost; continue with:\n  {then}", err=True)
        return ExitCode.TERMINATED if outcome.signal == signal.SIGTERM else ExitCode.INTERRUPTED
    error = outcome.error
    if error is not None:  # told at the edge, after what the run did
        if isinstance(error, OutputError) and error.broken_pipe:
            _quiet_stdout()
        # a refusal (a key revoked mid-send) after orders settled: their checkpoint is kept
        resumable = isinstance(error, GaveUp | OutputError | CheckpointError) or (
            isinstance(error, SendError) and outcome.kept
        )
        raise Stopped(error, then if resumable else None)
    if outcome.limited:
        click.echo("Stopped at --limit: the rest of the export is not sent yet. Rerun the same\n"
                   f"command (it continues), or send all the rest with:\n  {then}", err=True)  # fmt: skip
    return ExitCode.REJECTED if failed else ExitCode.OK


def json_option(what: str) -> Callable[..., Any]:
    """--json FILE, or '-' (or no FILE) for the standard output, in place of the report."""
    return click.option(
        "--json", "json_path", is_flag=False, flag_value="-", type=click.Path(allow_dash=True),
        help=f"Write {what} as JSON to FILE ('-', or no FILE: to stdout, instead of the table).",
    )  # fmt: skip


@main.command(short_help="Show what exports hold and what a send would make of them.")
@input_options
@json_option("the report")
@click.option("--html", "html_path", type=click.Path(), help="Write the report as one HTML file.")
@click.option("--monthly", is_flag=True, help="Also show the revenue of every month, per currency.")
@_edge
def inspect(json_path: str | None, html_path: str | None, monthly: bool, **kw: Any) -> int:
    """Read the exports and report what a backfill would send; send nothing."""
    from .commands.inspect import inspect as inspect_exports
    from .reports.terminal import console as report_console
    from .reports.terminal import describe, inspect_html, inspect_report

    refuse_inputs(kw["paths"], {"--html": html_path, "--json": json_path})
    _outputs({"json_path": json_path, "html_path": html_path})
    stats = inspect_exports(SendOptions(inputs=_inputs(kw)))
    if html_path:
        write_report(html_path, inspect_html(stats), "--html")
    if json_path:
        write_json(json_path, describe(stats), "--json")
    if json_path != "-":
        inspect_report(report_console(), stats, monthly)
    return ExitCode.REJECTED if stats.orders_rejected else ExitCode.OK  # as a dry run


@main.command(short_help="Show a send's checkpoint: orders done, rejected, left.")
@click.argument("paths", nargs=-1, type=click.Path())
@click.option(
    "--checkpoint", type=click.Path(), help="Checkpoint file (default: derived from PATHS)."
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(allow_dash=True),
    help="Write each job as JSON to FILE ('-': to stdout, instead of the tables).",
)
@_edge
def status(paths: tuple[str, ...], checkpoint: str | None, json_path: str | None) -> int:
    """Report a job: orders done, rejected, what is left, and the command that continues it.
    Without PATHS: every job in the state folder."""
    from .commands.status import jobs_folder, open_status
    from .reports.jobs import jobs_report
    from .reports.terminal import console as report_console
    from .reports.terminal import status_json, status_report

    _outputs({"json_path": json_path})
    with open_status(paths, checkpoint) as found:
        if json_path:
            write_json(json_path, {"jobs": [status_json(p, ledger) for p, ledger in found]},
                       "--json")  # fmt: skip
        elif not paths and not checkpoint:
            jobs_report(report_console(), found, jobs_folder())
        for path, ledger in found if (paths or checkpoint) and json_path != "-" else ():
            status_report(report_console(), path, ledger)
    return ExitCode.OK


def _read_options(kw: dict[str, Any], paths: tuple[str, ...]) -> SendOptions:
    return SendOptions(
        inputs=_inputs(kw | {"paths": paths}), endpoint=kw["endpoint"],
        trigger_flows=kw["trigger_flows"], revision=kw["revision"], base_url=kw["base_url"],
        api_key=kw["api_key"], checkpoint=kw.get("checkpoint"),
        rate_limit=kw.get("rate_limit"),
        profile_attributes=kw.get("profile_attributes") or "latest",
    )  # fmt: skip


def _outputs(kw: dict[str, Any]) -> None:
    for option in ("json_path", "html_path"):
        if kw.get(option):
            check_writable(kw[option], "--" + option.removesuffix("_path"))


@main.command(short_help="Check that Klaviyo holds what a send sent, month by month.")
@click.argument("paths", nargs=-1, type=click.Path())
@click.option(
    "--checkpoint",
    type=click.Path(),
    help="Checkpoint file (default: found from PATHS and the key).",
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(allow_dash=True),
    help="Write the rows as JSON to FILE ('-': to stdout, instead of the tables).",
)
@click.option("--html", "html_path", type=click.Path(), help="Write a one-file HTML report.")
@key_options
@input_flags
@click.option("--endpoint", type=click.Choice(ENDPOINT_NAMES), default="bulk", hidden=True)
@click.option("--trigger-flows", is_flag=True, hidden=True)
@click.option("--profile-attributes", type=click.Choice(PROFILE_ATTRIBUTES), hidden=True)
@_edge
def verify(paths: tuple[str, ...], json_path: str | None, html_path: str | None, **kw: Any) -> int:
    """Compare what Klaviyo acknowledged for an export's checkpoint with what it holds now:
    per metric, UTC month and currency (the key needs the metrics:read scope).

    PATHS are the exports the send read; with --checkpoint FILE they may be left out. An
    unfinished job is compared as far as it went, and said to be unfinished (exit 7)."""
    from rich.console import Console

    from .commands.continuation import continuation
    from .commands.verify import verify as verify_job
    from .reports.terminal import console as report_console
    from .reports.verify import verify_html, verify_report

    refuse_inputs(paths, {"--json": json_path, "--html": html_path})
    _outputs({"json_path": json_path, "html_path": html_path})
    options = _read_options(kw, paths)
    if not options.api_key:
        options = replace(options, api_key=_ask_key())
    with Console(stderr=True).status(
        "Reading Klaviyo's metrics, their monthly aggregates and the events"
    ):
        result: Verification = verify_job(options)
    result.again = continuation(options, resume=False, command="verify")
    if json_path != "-":
        verify_report(report_console(), result)
    if json_path:
        write_json(json_path, result.as_json(), "--json")
    if html_path:
        write_report(html_path, verify_html(result), "--html")
    if result.status not in ("ok", "unfinished"):
        return ExitCode.SHORT
    return ExitCode.UNFINISHED if result.unfinished else ExitCode.OK


for _param in verify.params:  # a re-read's --limit and --jobs: taken, not offered
    if isinstance(_param, click.Option) and _param.name in ("limit", "jobs"):
        _param.hidden = True


@main.command(short_help="Before a first send: the key, the account, overlaps and flows.")
@input_options
@click.option(
    "--json",
    "json_path",
    type=click.Path(allow_dash=True),
    help="Write the report as JSON to FILE ('-': to stdout, instead of the table).",
)
@endpoint_option
@click.option(
    "--trigger-flows", is_flag=True, help="Also list the flows the export's metrics trigger."
)
@click.option("--rate-limit", help="The send's rate limit, for its duration (default: Klaviyo's).")
@key_options
@click.option("--verbose", "-v", count=True, help="Log Klaviyo's answers and retries to stderr.")
@_edge
def preflight(json_path: str | None, verbose: int, **kw: Any) -> int:
    """Before a send: check the key, read the exports as a dry run does, and find the months
    where another integration (Shopify's own, say) already holds events of the same metrics.
    Exit 6 when there is such an overlap."""
    from rich.console import Console

    from .commands.preflight import preflight as preflight_job
    from .reports.terminal import console as report_console
    from .reports.terminal import preflight_report

    refuse_inputs(kw["paths"], {"--json": json_path})
    _outputs({"json_path": json_path})
    configure_logging(verbose, None)
    options = _read_options(kw, kw.pop("paths"))
    if not options.api_key:
        options = replace(options, api_key=_ask_key())
    with Console(stderr=True).status("Reading the export and Klaviyo's metrics"):
        report = preflight_job(options)
    if json_path != "-":
        preflight_report(report_console(), report)
    if json_path:
        write_json(json_path, report.as_json(), "--json")
    return ExitCode.OVERLAP if report.overlap else ExitCode.OK
