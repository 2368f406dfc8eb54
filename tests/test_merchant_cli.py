"""The command line as a merchant meets it (issue #22): help in the order the commands are
used, a bare command that helps, defaults shown as they will be, exit codes a script can use.
The real console script, in a subprocess, at 80 columns."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

try:
    from cli_helpers import CLI
except ImportError:  # tests/ made a package
    from tests.cli_helpers import CLI

from klaviyo_backfill.errors import ExitCode


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    variables = {k: v for k, v in os.environ.items() if not k.startswith(("KLAVIYO_", "XDG_"))}
    variables.update(COLUMNS="80", **env)
    return subprocess.run([CLI, *args], env=variables, capture_output=True, text=True, timeout=60)


@pytest.mark.e2e
def test_a_bare_command_prints_the_help_and_exits_0() -> None:
    bare = run()
    assert bare.returncode == 0, bare.stderr
    assert bare.stdout == run("--help").stdout
    assert bare.stdout.split("\n\n")[1].strip().startswith("Start here: `klaviyo-backfill inspect")


@pytest.mark.e2e
def test_the_commands_are_listed_in_the_order_a_merchant_uses_them() -> None:
    lines = run("--help").stdout.split("Commands:")[1].strip().splitlines()
    names = [line.split()[0] for line in lines]
    assert names == ["inspect", "send", "status", "verify", "preflight"], lines
    for line in run("--help").stdout.split("Commands:")[1].strip().splitlines():
        assert not line.endswith("..."), line  # each line whole


@pytest.mark.e2e
def test_the_checkpoint_default_is_where_it_will_be(tmp_path: Path) -> None:
    """The help said ~/.local/state/... whatever XDG_STATE_HOME said."""
    shown = "".join(run("send", "--help", XDG_STATE_HOME=str(tmp_path)).stdout.split())
    assert f"{tmp_path}/klaviyo-backfill/checkpoints/]" in shown, shown
    plain = "".join(run("send", "--help").stdout.split())
    assert "~/.local/state/klaviyo-backfill/checkpoints/]" in plain, plain


@pytest.mark.e2e
@pytest.mark.parametrize("command", ["send", "inspect", "status", "verify", "preflight"])
def test_every_option_is_described(command: str) -> None:
    """`--base-url` and `--endpoint` had no description."""
    text = run(command, "--help").stdout.split("Options:")[1]
    bare = [line.split()[0] for line in text.splitlines()
            if line.startswith("  -") and len(line.split()) <= 2 and "--help" not in line]  # fmt: skip
    following = text.splitlines()
    for name in bare:  # an option whose help starts on the next line is described too
        at = next(i for i, line in enumerate(following) if line.split()[:1] == [name])
        assert following[at + 1].startswith(" " * 20), (command, name)
    flat = " ".join(text.split())
    if command in ("send", "preflight"):
        assert "--endpoint [bulk|single|legacy] Klaviyo API to send to" in flat, flat
    if command in ("send", "verify", "preflight"):
        assert "--base-url TEXT Where Klaviyo's API is" in flat, flat


@pytest.mark.e2e
def test_verify_help_names_no_option_it_hides() -> None:
    text = run("verify", "--help").stdout
    for hidden in ("--endpoint", "--trigger-flows", "--profile-attributes", "--limit", "--jobs"):
        assert hidden not in text, hidden


@pytest.mark.e2e
def test_preflight_takes_v() -> None:
    said = run("preflight", "-v", "nowhere.csv")
    assert "No such option" not in said.stderr, said.stderr
    assert said.returncode == 2 and "nowhere.csv" in said.stderr, said.stderr


def test_the_exit_codes_are_distinct_and_named() -> None:
    """SHORT was an alias of REJECTED: verify's shortfall and a rejected order looked alike."""
    values = [code.value for code in ExitCode]
    assert len(values) == len(set(values)) == len(ExitCode.__members__)
    assert ExitCode.OK == 0 and ExitCode.REJECTED == 1 and ExitCode.USAGE == 2


def test_no_option_offered_goes_undescribed() -> None:
    import click

    from klaviyo_backfill.cli import main

    bare = [(name, p.opts) for name, command in main.commands.items() for p in command.params
            if isinstance(p, click.Option) and not p.hidden and not p.help]  # fmt: skip
    assert not bare, bare
