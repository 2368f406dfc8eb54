"""One Klaviyo account, one history (issue #20): what a merchant does over a year, end to end
against the stand-in: runs interrupted and continued from other folders, a job run twice at
once, verify of an unfinished job, the commands the tool prints, the failures file, `status`
without arguments, a rotated key.
"""

from __future__ import annotations

import json
import re
import secrets
import shlex
import shutil
import signal
import subprocess
from dataclasses import replace
from pathlib import Path

import cli_helpers
import corpus
import pytest
import standin as st
from cli_helpers import CLI, checkpoints_in, free_port, in_process, logs, wait_until

from klaviyo_backfill.errors import ExitCode

pytestmark = pytest.mark.e2e
KEY = "pk_history_" + secrets.token_hex(12)
SLOW = ["--endpoint", "single", "--rate-limit", "300/s,3000/m", "--concurrency", "8", "-q"]


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 Shopify orders (about 1,000 events)."""
    where = tmp_path_factory.mktemp("history") / "orders_export.csv"
    corpus.write_shopify_csv(corpus.make_orders(300, 20, "shopify"), where)
    return where


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 Shopify orders: what the tests of the account's id send."""
    where = tmp_path_factory.mktemp("history") / "orders_export.csv"
    corpus.write_shopify_csv(corpus.make_orders(40, 21, "shopify"), where)
    return where


def env(key: str = KEY) -> dict[str, str]:
    return cli_helpers.env(key, COLUMNS="200")


def run(cwd: Path, *args: str, key: str = KEY) -> subprocess.CompletedProcess[str]:
    return cli_helpers.run(cwd, key, *args)


def start(cwd: Path, name: str, *args: str, key: str = KEY) -> subprocess.Popen[bytes]:
    return cli_helpers.start(cwd, key, name, *args, COLUMNS="200")


def interrupted(cwd: Path, s: st.StandIn, *args: str, after: int = 30) -> str:
    """A send stopped with Ctrl-C once the stand-in answered `after` requests: its output."""
    proc = start(cwd, "first", *args)
    try:
        wait_until(lambda: len(s.requests) >= after, proc, limit=60,
                   what="before it could be interrupted")  # fmt: skip
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = logs(cwd, "first")
    assert proc.returncode == 130, out
    return out


def continuation(output: str) -> list[str]:
    """The command a stopped run printed to continue it, as argv (the console script)."""
    start_at = output.index("klaviyo-backfill ")
    lines = output[start_at:].splitlines()
    line = lines.pop(0)
    while line.endswith("\\"):  # cut to the terminal's width: a shell reads one line
        line = line[:-1] + lines.pop(0)
    argv = shlex.split(line)
    return [CLI, *argv[1:]]


@pytest.mark.slow
def test_two_resumes_started_together_send_each_event_once(export: Path, tmp_path: Path) -> None:
    shutil.copy(export, tmp_path / "orders.csv")
    with st.StandIn(api_key=KEY, port=free_port(), faults=st.Faults(latency=0.02)) as s:
        base = ["send", "orders.csv", "--base-url", s.url, *SLOW]
        interrupted(tmp_path, s, *base)
        held = len(s.keys())
        one = start(tmp_path, "one", *base, "--resume")
        two = start(tmp_path, "two", *base, "--resume")
        one.wait(120)
        two.wait(120)
        codes = sorted([one.returncode, two.returncode])
        outputs = logs(tmp_path, "one") + logs(tmp_path, "two")
        assert codes[1] == 2 and codes[0] in (0, 1), outputs
        assert "is sending with checkpoint" in outputs
        assert s.stats["duplicates_skipped"] == 0, outputs
        assert len(s.keys()) > held
        status = run(tmp_path, "status", "orders.csv")
        assert "finished" in status.stdout, status.stdout + status.stderr


def test_verify_of_an_unfinished_job_says_so_in_the_verdict_exit_code_and_json(
    export: Path, tmp_path: Path
) -> None:
    shutil.copy(export, tmp_path / "orders.csv")
    with st.StandIn(api_key=KEY, port=free_port(), faults=st.Faults(latency=0.02)) as s:
        interrupted(tmp_path, s, "send", "orders.csv", "--base-url", s.url, *SLOW)
        done = in_process(tmp_path, KEY, "verify", "orders.csv", "--base-url", s.url,
                          "--json", "v.json", clock=s.clock)  # fmt: skip
    out = " ".join(done.stdout.split())
    assert done.returncode == ExitCode.UNFINISHED == 7, done.stdout + done.stderr
    assert "UNFINISHED: the job is stopped before its end" in out, out
    assert "OK" not in out.replace("UNFINISHED", "")
    doc = json.loads((tmp_path / "v.json").read_text())
    assert doc["final"] is False and doc["status"] == "unfinished"
    assert doc["unfinished"].startswith("stopped before its end")
    assert doc["continue_with"].endswith("--resume")


@pytest.mark.slow
def test_the_printed_continuation_works_from_another_folder_and_one_failures_file_holds_all(
    export: Path, tmp_path: Path, own_state_folder: Path
) -> None:
    """Interrupted in one folder, continued from `/` as printed: the failures file is the
    job's (beside its checkpoint), holds every rejection once, and no folder gets another."""
    shop, elsewhere = tmp_path / "shop", tmp_path / "elsewhere"
    shop.mkdir()
    elsewhere.mkdir()
    shutil.copy(export, shop / "orders.csv")
    with st.StandIn(api_key=KEY, port=free_port(), faults=st.Faults(latency=0.02)) as s:
        first = interrupted(shop, s, "send", "orders.csv", "--base-url", s.url, *SLOW)
        argv = continuation(first)
        assert str(shop / "orders.csv") in argv
        resumed = subprocess.run(argv, cwd="/", env=env(), capture_output=True, text=True,
                                 timeout=120)  # fmt: skip
        assert resumed.returncode == 1, resumed.stdout + resumed.stderr  # rejected orders
        assert s.stats["duplicates_skipped"] == 0
        status = run(elsewhere, "status", str(shop / "orders.csv"))
    (checkpoint,) = checkpoints_in(own_state_folder)
    failures = checkpoint.with_name(checkpoint.stem + ".failures.jsonl")
    lines = [json.loads(x) for x in failures.read_text().splitlines()]
    dry = run(tmp_path, "send", str(shop / "orders.csv"), "--dry-run", "--failures", "dry.jsonl")
    expected = (tmp_path / "dry.jsonl").read_text().splitlines()
    assert len(lines) == len(expected) == 45, dry.stdout
    assert failures.name in "".join(resumed.stdout.split()), resumed.stdout
    assert not list(shop.glob("*.jsonl")) and not list(elsewhere.glob("*.jsonl"))
    assert "finished" in status.stdout
    said = status.stdout.splitlines()  # the command alone on its line, to be copied whole
    at = said.index("Nothing left; a later export saved there is sent with:")
    command = said[at + 1]
    assert command.startswith("  klaviyo-backfill send ") and not command.endswith("--resume")
    assert str(shop / "orders.csv") in command, status.stdout


@pytest.mark.slow
def test_a_limited_run_says_what_next_and_a_plain_rerun_continues(
    export: Path, tmp_path: Path
) -> None:
    shutil.copy(export, tmp_path / "orders.csv")
    with st.StandIn(api_key=KEY, port=free_port()) as s:
        base = ["send", "orders.csv", "--base-url", s.url, "--rate-limit", "100/s,1000/m", "-q"]
        trial = run(tmp_path, *base, "--limit", "5")
        assert trial.returncode in (0, 1), trial.stdout + trial.stderr
        assert "Stopped at --limit" in trial.stderr
        printed = continuation(trial.stderr[trial.stderr.index("Stopped at --limit") :])
        assert "--limit" not in printed and str(tmp_path / "orders.csv") in printed
        first = len(s.keys())
        listed = subprocess.run([CLI, "status"], cwd="/", env=env(), capture_output=True,
                                text=True, timeout=60)  # fmt: skip
        table = "".join(listed.stdout.split())
        assert listed.returncode == 0, listed.stdout + listed.stderr
        assert "".join(str(tmp_path / "orders.csv").split()) in table, listed.stdout
        assert "limited" in table and "".join(printed[1:]) in table, listed.stdout
        assert ".failures.jsonl" in table
        lines = [line.strip() for line in listed.stdout.splitlines()]  # 80 columns: a pipe's
        assert str(tmp_path / "orders.csv") in lines, listed.stdout  # paths whole, never folded
        assert any(line.startswith("/") and line.endswith(".failures.jsonl") for line in lines)
        assert any(line.startswith("/") and line.endswith(".sqlite") for line in lines)
        again = run(tmp_path, *base, "--limit", "5")  # the same command again: 5 more
        assert again.returncode in (0, 1), again.stdout + again.stderr
        assert "unfinished" not in again.stderr.lower()
        assert len(s.keys()) > first
        rest = subprocess.run(printed, cwd="/", env=env(), capture_output=True, text=True,
                              timeout=120)  # fmt: skip
        assert rest.returncode == 1, rest.stdout + rest.stderr
        sent = s.keys()
        assert s.stats["duplicates_skipped"] == 0
    with st.StandIn(api_key=KEY, port=free_port()) as whole:
        once = run(tmp_path, "send", "orders.csv", "--base-url", whole.url, "--restart",
                   "--resend", "--rate-limit", "100/s,1000/m", "-q")  # fmt: skip
        assert once.returncode == 1, once.stdout + once.stderr
        assert whole.keys() == sent


def test_resume_with_a_key_that_matches_no_job_is_named_as_a_key_problem(
    export: Path, tmp_path: Path
) -> None:
    """A mistyped key is refused by Klaviyo at the first read (exit 3, the key named); the
    valid key of another account is told it matches no job (exit 2), never "Run without
    --resume" (that would start a new job in that other account)."""
    shutil.copy(export, tmp_path / "orders.csv")
    port, other = free_port(), "pk_other_account_" + secrets.token_hex(8)
    with st.StandIn(api_key=KEY, port=port, faults=st.Faults(latency=0.02)) as s:
        interrupted(tmp_path, s, "send", "orders.csv", "--base-url", s.url, *SLOW)
        mistyped = run(tmp_path, "send", "orders.csv", "--base-url", s.url, *SLOW, "--resume",
                       key="pk_mistyped_" + secrets.token_hex(8))  # fmt: skip
    with st.StandIn(api_key=other, port=port) as elsewhere:  # another account, same address
        wrong = run(tmp_path, "send", "orders.csv", "--base-url", elsewhere.url, *SLOW,
                    "--resume", key=other)  # fmt: skip
        assert not elsewhere.requests  # nothing sent to the other account
    told = " ".join(mistyped.stderr.split())
    assert mistyped.returncode == 3, told
    assert "Klaviyo refused the API key" in told and "KLAVIYO_API_KEY" in told, told
    told = " ".join(wrong.stderr.split())
    assert wrong.returncode == 2, told
    assert "this key matches no job of" in told and "Is the key right?" in told, told
    assert "Run without --resume" not in told


def test_two_windows_sent_apart_both_land_and_verify_covers_both(
    export: Path, tmp_path: Path
) -> None:
    shutil.copy(export, tmp_path / "orders.csv")
    fast = ["--rate-limit", "100/s,1000/m", "-q"]
    with st.StandIn(api_key=KEY, port=free_port()) as s:
        early = run(tmp_path, "send", "orders.csv", "--base-url", s.url, *fast, "--until",
                    "2020-06-30")  # fmt: skip
        first = len(s.keys())
        late = run(tmp_path, "send", "orders.csv", "--base-url", s.url, *fast, "--since",
                   "2020-07-01")  # fmt: skip
        assert early.returncode == late.returncode == 1, early.stderr + late.stderr
        assert 0 < first < len(s.keys())
        done = in_process(tmp_path, KEY, "verify", "orders.csv", "--base-url", s.url,
                          "--json", "v.json", clock=s.clock)  # fmt: skip
        stored = len(s.keys())
    doc = json.loads((tmp_path / "v.json").read_text())
    assert done.returncode == 0 and doc["status"] == "ok", done.stdout + done.stderr
    assert sum(row["sent_count"] for row in doc["rows"]) == stored


FAST = ["--rate-limit", "100/s,1000/m", "-q"]
# GET /api/accounts 10 a second (Klaviyo's is 1): runs a moment apart wait for no window
ACCOUNTS = {"accounts": st.Limits(10, 1.0, 150, 60.0)}


@pytest.mark.slow  # five runs and a verify: 3 to 4 s
def test_a_rotated_key_continues_the_same_history_and_every_command_shows_one_account(
    small: Path, tmp_path: Path
) -> None:
    shutil.copy(small, tmp_path / "orders.csv")
    shutil.copy(small, tmp_path / "copy.csv")  # the same orders, another export
    rotated = "pk_rotated_" + secrets.token_hex(12)
    with st.StandIn(api_key=KEY, port=free_port(), read_limits=ACCOUNTS) as s:
        first = run(tmp_path, "send", "orders.csv", "--base-url", s.url, *FAST)
        assert first.returncode == 1, first.stdout + first.stderr  # its rejected orders
        sent, reads = len(s.requests), len(s.reads)
        s.api_key = rotated  # the old key revoked, a new one made for the same account
        again = run(tmp_path, "send", "orders.csv", "--base-url", s.url, *FAST, key=rotated)
        copy = run(tmp_path, "send", "copy.csv", "--base-url", s.url, *FAST,
                   "--summary-json", "copy.json", key=rotated)  # fmt: skip
        assert len(s.requests) == sent, "a rotated key sent again"
        preflight = in_process(tmp_path, rotated, "preflight", "orders.csv", "--base-url",
                               s.url, "--json", "p.json", clock=s.clock)  # fmt: skip
        verify = in_process(tmp_path, rotated, "verify", "orders.csv", "--base-url", s.url,
                            "--json", "v.json", clock=s.clock)  # fmt: skip
        accounts = [r for r in s.reads[reads:] if r.path == "/api/accounts"]
    # the new key's account read once (then remembered), and once by preflight's key check
    assert [r.status for r in accounts] == [200, 200], accounts
    assert "Nothing to do" in again.stdout, again.stdout + again.stderr
    summary = json.loads((tmp_path / "copy.json").read_text())
    assert sum(summary["events_sent"].values()) == 0 and summary["events_already_in_klaviyo"] > 0
    account = s.account["id"]
    assert json.loads((tmp_path / "p.json").read_text())["account_id"] == account
    assert account in preflight.stdout
    status = run(tmp_path, "status", "orders.csv")
    assert account in status.stdout and "hash" not in status.stdout, status.stdout
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert f"Klaviyo account {account}" in verify.stdout, verify.stdout
    assert json.loads((tmp_path / "v.json").read_text())["account"] == account
    assert summary["account"] == account
    assert "Warning" not in first.stderr + again.stderr + copy.stderr


def test_a_history_kept_under_the_keys_hash_is_adopted_and_a_rotated_key_resends_nothing(
    small: Path, tmp_path: Path
) -> None:
    """An upgrade: jobs and the ledger kept under the key's hash (an earlier version, or a
    key without accounts:read) are renamed to Klaviyo's id once the key may read it."""
    shutil.copy(small, tmp_path / "orders.csv")
    rotated = "pk_rotated_" + secrets.token_hex(12)
    faults = st.Faults(missing_scopes=frozenset({"accounts:read"}))
    with st.StandIn(api_key=KEY, port=free_port(), faults=faults, read_limits=ACCOUNTS) as s:
        first = run(tmp_path, "send", "orders.csv", "--base-url", s.url, *FAST)
        assert first.returncode == 1, first.stdout + first.stderr
        (hashed,) = re.findall(r"account ([0-9a-f]{12})", first.stderr)
        sent = len(s.requests)
        s.faults = replace(faults, missing_scopes=frozenset())  # the scope added to the key
        again = run(tmp_path, "send", "orders.csv", "--base-url", s.url, *FAST)
        s.api_key = rotated
        rotation = run(tmp_path, "send", "orders.csv", "--base-url", s.url, *FAST, key=rotated)
        assert len(s.requests) == sent, "the upgrade or the rotated key sent again"
    account = s.account["id"]
    ledgers = cli_helpers.state_folder() / "klaviyo-backfill" / "accounts"
    assert sorted(p.name for p in ledgers.glob("*.sqlite")) == [f"{account}.sqlite"]
    (checkpoint,) = checkpoints_in()
    assert checkpoint.name.endswith(f"-{account}.sqlite"), checkpoint
    assert checkpoint.with_name(checkpoint.stem + ".failures.jsonl").is_file()
    for done in (again, rotation):
        assert "Nothing to do" in done.stdout and done.returncode == 0, done.stdout + done.stderr
    status = run(tmp_path, "status", "orders.csv")
    assert account in status.stdout and hashed not in status.stdout, status.stdout


def test_a_key_without_accounts_read_is_told_it_keeps_a_history_of_its_own(
    small: Path, tmp_path: Path
) -> None:
    shutil.copy(small, tmp_path / "orders.csv")
    faults = st.Faults(missing_scopes=frozenset({"accounts:read"}))
    with st.StandIn(api_key=KEY, port=free_port(), faults=faults, read_limits=ACCOUNTS) as s:
        sent = run(tmp_path, "send", "orders.csv", "--base-url", s.url, "--limit", "3", "-q")
        preflight = in_process(tmp_path, KEY, "preflight", "orders.csv", "--base-url", s.url,
                               clock=s.clock)  # fmt: skip
    warned = [line for line in sent.stderr.splitlines() if "accounts:read" in line]
    assert len(warned) == 1 and warned[0].startswith("Warning: "), sent.stderr
    assert "a new key will start a new history" in warned[0]
    (hashed,) = re.findall(r"account ([0-9a-f]{12})", warned[0])
    assert hashed in run(tmp_path, "status", "orders.csv").stdout
    assert hashed in preflight.stdout


def test_a_new_key_whose_account_cannot_be_read_sends_nothing(small: Path, tmp_path: Path) -> None:
    """GET /api/accounts failing (5xx after the retries) for a key with no history: the run
    stops rather than start a history beside the account's own."""
    shutil.copy(small, tmp_path / "orders.csv")
    faults = st.Faults(read_server_error=1.0)
    tuning = ["--tuning", "max_attempts=2,backoff_base=0.01"]
    with st.StandIn(api_key=KEY, port=free_port(), faults=faults, read_limits=ACCOUNTS) as s:
        failed = run(tmp_path, "send", "orders.csv", "--base-url", s.url, *FAST, *tuning)
        assert not s.requests
        s.faults = st.Faults()  # Klaviyo answers again
        first = run(tmp_path, "send", "orders.csv", "--base-url", s.url, *FAST, *tuning)
        s.faults = faults  # and fails again: the key's account is remembered, not read
        reads = len(s.reads)
        again = run(tmp_path, "send", "orders.csv", "--base-url", s.url, *FAST, *tuning)
        assert [r.path for r in s.reads[reads:]] == []
    assert failed.returncode == ExitCode.GAVE_UP, failed.stdout + failed.stderr
    assert "which Klaviyo account this key belongs to" in failed.stderr, failed.stderr
    assert "Traceback" not in failed.stderr
    assert first.returncode == 1, first.stdout + first.stderr
    assert "Nothing to do" in again.stdout, again.stdout + again.stderr
