"""The README a newcomer reads (issue #14, "the first hour", item 8), held to the code: the
commands it gives work as written, the reference names every key and format the code
accepts, and the sample data's README counts what its files hold."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from klaviyo_backfill.cli import main
from klaviyo_backfill.inputs.layouts import _OPTION_KEYS as OPTION_KEYS
from klaviyo_backfill.inputs.layouts import LINE_KEYS, ORDER_KEYS
from klaviyo_backfill.options import format_names

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
LAYOUTS = (ROOT / "docs" / "layouts.md").read_text(encoding="utf-8")
REFERENCE = (ROOT / "docs" / "reference.md").read_text(encoding="utf-8")
TRY = "python3 -m venv .venv && .venv/bin/pip install . && .venv/bin/klaviyo-backfill send sample_data/ --dry-run"
TESTS = "python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/python -m pytest"


def code_blocks(text: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", text, re.S)


def test_the_readme_opens_with_its_two_commands_and_ci_runs_the_second() -> None:
    blocks = code_blocks(README)
    assert [b.strip() for b in blocks[:2]] == [TRY, TESTS]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert TESTS.replace("pip install", "pip install -q") in ci


def test_the_readme_says_how_the_command_is_found_after_the_install() -> None:
    """The commands after the install section failed with "command not found"."""
    first = README.index("klaviyo-backfill send orders_export.csv")
    assert README.index("source .venv/bin/activate") < first
    assert "pipx install ." in README[:first]
    for block in code_blocks(README)[2:]:
        lines = [line for line in block.splitlines() if line.startswith("klaviyo-backfill")]
        if lines:
            assert "source .venv/bin/activate" in block.split(lines[0])[0], block


def test_the_readme_is_short_and_names_the_python_it_needs() -> None:
    """It was 5,030 words, its first hour on the second screen, and never said 3.11."""
    assert len(README.split()) <= 1500, len(README.split())
    assert "Python 3.11 or newer" in README[:1000]
    required = re.search(r'requires-python = ">=(\d+\.\d+)"', (ROOT / "pyproject.toml").read_text())
    assert required and f"Python {required.group(1)} or newer" in README
    order = ["## Try it", "## Your first hour", "inspect", "--dry-run", "--resume", "verify",
             "Next month", "## What Klaviyo shows", "## Undo", "## Rejected orders",
             "## When `verify` stays short"]  # fmt: skip
    start = README.index("## Your first hour")
    places = [README.index(step, start if i > 1 else 0) for i, step in enumerate(order)]
    assert places == sorted(places), order


def test_the_exit_code_table_is_the_enum() -> None:
    from klaviyo_backfill.errors import ExitCode

    table = REFERENCE[REFERENCE.index("## Exit codes") :].split("\n\n")[1]
    codes = [int(c) for c in re.findall(r"^\| (\d+) \|", table, re.M)]
    assert codes == sorted(code.value for code in ExitCode), codes
    said = README[README.index("## Exit codes") :].split("\n\n")[1]
    assert sorted(int(c) for c in re.findall(r"\b(\d+)\s+(?:when|for|on)\b", said)) == codes, said


def test_the_formats_table_names_every_built_in_format() -> None:
    table = REFERENCE[REFERENCE.index("| `--format` | what |") :].split("\n\n")[0]
    assert sorted(re.findall(r"^\| `([a-z][a-z-]+)` \|", table, re.M)) == format_names()


def test_the_readme_refers_to_nothing_that_is_not_there() -> None:
    assert "the default layout above" not in README
    for link in re.findall(r"\]\(([^)#]+)\)", README):
        assert (ROOT / link).exists(), link


def test_the_layout_reference_names_every_key_a_layout_accepts() -> None:
    """`customer_phone`, `number`, `subtotal`, `refund_reason`... were accepted, undocumented."""
    named = set(re.findall(r"`([a-z0-9_]+)`", LAYOUTS))
    shipping = {k for k in ORDER_KEYS if k.startswith("shipping_")}
    assert ORDER_KEYS - shipping <= named, sorted(ORDER_KEYS - shipping - named)
    assert "`shipping_...`" in LAYOUTS and {"billing_" + k[9:] for k in shipping} <= named
    assert named >= LINE_KEYS, sorted(LINE_KEYS - named)
    assert named >= OPTION_KEYS, sorted(OPTION_KEYS - named)
    for key in ("name", "kind", "description", "group_by", "detect", "required", "hook"):
        assert f"| `{key}` |" in LAYOUTS, key


def test_the_reference_moved_to_docs_and_the_readme_points_there() -> None:
    for doc in ("fields.md", "layouts.md", "performance.md", "reference.md", "security.md",
                "development.md"):  # fmt: skip
        assert (ROOT / "docs" / doc).exists()
        assert f"(docs/{doc})" in README
    assert "## What is sent, field by field" not in README and "## Performance" not in README


SAMPLES = [
    ("shopify_orders_export.csv", ()),
    ("shopify_orders.json", ()),
    ("woocommerce_orders.csv", ()),
    ("woocommerce_orders.json", ()),
    ("problems/shopify_orders_with_problems.csv", ()),
    ("custom_cart/orders.csv", ("--layout", str(ROOT / "sample_data/custom_cart/layout.toml"))),
]


@pytest.mark.parametrize(("name", "extra"), SAMPLES)
def test_the_sample_data_readme_counts_the_orders_of_each_file(
    name: str, extra: tuple[str, ...]
) -> None:
    """It said 30 orders a file; they hold 25 to 30."""
    said = (ROOT / "sample_data" / "README.md").read_text(encoding="utf-8")
    line = next(x for x in said.splitlines() if f"`{name}`" in x or f"`{name.split('/')[0]}/`" in x)
    (count,) = re.findall(r"\b(\d+) orders", line)
    result = CliRunner().invoke(
        main, ["inspect", str(ROOT / "sample_data" / name), "--json", *extra]
    )
    assert json.loads(result.stdout)["orders_read"] == int(count), line
