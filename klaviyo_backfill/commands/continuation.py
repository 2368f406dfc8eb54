"""The command that continues a job, as the tool prints it: it works as printed, from any folder.

Built from the options, never from the command line as typed: every file is named by its
absolute path, the options that bind the checkpoint (and where it and the failures file are)
are kept, --limit never is (a continuation sends the rest), nor the key (KLAVIYO_API_KEY, or
the prompt), nor what only shapes this run's output (-q, -v, --log, --summary-json).
"""

from __future__ import annotations

import os
import shlex

from ..options import DEFAULT_BASE_URL, DEFAULT_REVISION, SendOptions

__all__ = ["continuation"]

_SEND_ONLY = frozenset({"--rate-limit", "--concurrency", "--failures", "--output", "--tuning"})


def _path(value: str) -> str:
    return value if value == "-" else os.path.abspath(value)


def continuation(options: SendOptions, resume: bool = True, command: str = "send") -> str:
    """`klaviyo-backfill send <absolute paths> <options> --resume`, quoted for a shell;
    `command` "verify": the verify of the same job (the options verify takes)."""
    source = options.inputs
    args = ["klaviyo-backfill", command, *(_path(p) for p in source.paths)]
    attributes = options.profile_attributes if options.profile_attributes != "latest" else None
    zone = source.timezone if source.timezone_given or source.timezone != "UTC" else None
    pairs: list[tuple[str, str | None]] = [
        ("--format", source.fmt),
        ("--layout", source.layout and _path(source.layout)),
        ("--products", source.products and _path(source.products)),
        ("--encoding", source.encoding),
        ("--delimiter", source.delimiter),
        ("--timezone", zone),
        ("--currency", source.currency),
        ("--since", source.since),
        ("--until", source.until),
        ("--date-order", source.date_order if source.since or source.until else None),
        ("--store", source.store),
        ("--endpoint", options.endpoint if options.endpoint != "bulk" else None),
        ("--revision", options.revision if options.revision != DEFAULT_REVISION else None),
        ("--base-url", options.base_url if options.base_url != DEFAULT_BASE_URL else None),
        ("--rate-limit", options.rate_limit),
        ("--concurrency", str(options.concurrency) if options.concurrency else None),
        ("--checkpoint", options.checkpoint and _path(options.checkpoint)),
        ("--failures", options.failures and _path(options.failures)),
        ("--output", options.output and _path(options.output)),
        ("--profile-attributes", attributes),
        ("--tuning", options.tuning),
    ]
    for flag, value in pairs:
        if value and (command == "send" or flag not in _SEND_ONLY):
            args += [flag, value]
    if options.trigger_flows:
        args.append("--trigger-flows")
    if options.resend and command == "send":
        args.append("--resend")
    if resume and command == "send":
        args.append("--resume")
    return " ".join(shlex.quote(arg) for arg in args)
