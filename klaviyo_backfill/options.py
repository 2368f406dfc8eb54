"""The typed options of a run, as a user gives them: what the command line fills in and a
library caller builds. Plain values only, light to import; `pipeline.job.job_from` checks and
resolves them (files, layouts, zones, dates) into a `job.Job`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from typing import Literal

from .klaviyo.endpoints import DEFAULT_REVISION, ENDPOINTS

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_REVISION",
    "ENDPOINT_NAMES",
    "PROFILE_ATTRIBUTES",
    "InputOptions",
    "Mode",
    "SendOptions",
    "format_names",
]

DEFAULT_BASE_URL = "https://a.klaviyo.com"
ENDPOINT_NAMES = tuple(ENDPOINTS)
Mode = Literal["new", "resume", "restart"]
PROFILE_ATTRIBUTES = ("latest", "all", "none")  # --profile-attributes: latest.py


def format_names() -> list[str]:
    """The built-in layouts' names (their files' names), without parsing them."""
    folder = resources.files(__package__).joinpath("inputs", "layouts")
    return sorted(
        e.name.removesuffix(".toml") for e in folder.iterdir() if e.name.endswith(".toml")
    )


@dataclass(frozen=True)
class InputOptions:
    """Which exports to read, and how."""

    paths: tuple[str, ...]
    fmt: str | None = None  # a built-in layout's name; None: detected per file
    layout: str | None = None  # a layout file (TOML)
    products: str | None = None  # line items in their own JSON file (BigCommerce)
    encoding: str | None = None
    delimiter: str | None = None  # CSV: one character or 'tab'; None: told from the header
    timezone: str = "UTC"  # for times without an offset
    timezone_given: bool = False  # named by the user (no "naive time read as UTC" warning)
    currency: str | None = None
    since: str | None = None
    until: str | None = None
    date_order: str | None = None  # --since/--until in figures: "dmy" or "mdy"
    limit: int | None = None
    jobs: int | None = None  # processes for a dry run or inspect (None: one per core)
    store: str | None = None  # the store the orders were sold in (several shops, one account)


@dataclass(frozen=True)
class SendOptions:
    """A send, or its dry run: the inputs, what is sent, where to, and the checkpoint."""

    inputs: InputOptions
    endpoint: str = "bulk"
    trigger_flows: bool = False
    revision: str = DEFAULT_REVISION
    output: str | None = None  # every request body as a JSON line ('-': stdout)
    failures: str | None = None
    base_url: str = DEFAULT_BASE_URL
    api_key: str | None = field(default=None, repr=False)
    public_key: str | None = None
    rate_limit: str | None = None  # e.g. '10/s,150/m'; None: the endpoint's published limits
    concurrency: int | None = None  # None: the endpoint's default
    checkpoint: str | None = None  # None: derived from the exports' paths
    mode: Mode = "new"
    # send even where another integration's metric of the same name holds events in the
    # months sent (the overlap check of a new job; its checkpoint remembers the choice)
    allow_overlap: bool = False
    resend: bool = False  # send what the account holds already too (Klaviyo drops repeats)
    profile_attributes: str = "latest"  # one of PROFILE_ATTRIBUTES (latest.py)
    tuning: str | None = None  # limits of the sender and its retries (klaviyo/sender.tuned)
    repair: str | None = None  # send only the events this file (verify's) lists (repair.py)
