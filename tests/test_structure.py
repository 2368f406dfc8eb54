"""The layers' import rules, read from the source (issue: a thin CLI over a typed core).

cli             -> options, run (orchestration), report, progress, errors: no business rule
events          -> never the encoder (events are data; encode.py makes the bytes)
klaviyo/*       -> never the orchestration, the checkpoint or the export readers
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "klaviyo_backfill"


def imported(module: str) -> set[str]:
    """Every klaviyo_backfill module `module` imports, at any depth of its code."""
    path = PACKAGE / (module.replace(".", "/") + ".py")
    if not path.exists():
        path = PACKAGE / module.replace(".", "/") / "__init__.py"
    package = module.rsplit(".", 1)[0] if "." in module else ""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = (
                package.split(".")[: len(package.split(".")) - (node.level - 1)] if package else []
            )
            target = ".".join([*[b for b in base if b], *([node.module] if node.module else [])])
            names = [target] if node.module else [a.name for a in node.names]
            found.update(n for n in names if n)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
            "klaviyo_backfill"
        ):
            found.add(node.module.removeprefix("klaviyo_backfill.") if node.module else "")
    return found


def test_the_cli_imports_the_orchestration_and_the_report_only() -> None:
    assert imported("cli") <= {"__version__", "errors", "options", "run", "report", "progress"}
    assert {"run", "report"} <= imported("cli")


@pytest.mark.parametrize("layer", ["checkpoint", "encode", "klaviyo.throttle", "values", "orders"])
def test_the_cli_does_not_reach_past_the_orchestration(layer: str) -> None:
    assert layer not in imported("cli")


def test_the_event_layer_does_not_import_the_encoder() -> None:
    assert "encode" not in imported("events")


@pytest.mark.parametrize("module", ["klaviyo.client", "klaviyo.retry", "klaviyo.throttle",
                                    "klaviyo.answers", "klaviyo.endpoints",
                                    "klaviyo.reading"])  # fmt: skip
def test_the_klaviyo_client_does_not_import_the_orchestration(module: str) -> None:
    forbidden = {"run", "orders", "job", "tracker", "checkpoint", "read", "summary", "failures"}
    assert not imported(module) & forbidden, imported(module)


def test_help_and_status_import_neither_httpx_nor_the_pipeline() -> None:
    """`--help` and `status` start fast: the heavy layers are imported where they run."""
    code = (
        "import sys, klaviyo_backfill.cli, klaviyo_backfill.run, klaviyo_backfill.report;"
        "print(sorted(m for m in ('httpx', 'phonenumbers', 'klaviyo_backfill.orders',"
        " 'klaviyo_backfill.encode', 'dateutil') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
