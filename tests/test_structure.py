"""The layers' import rules, read from the source (issue: a thin CLI over a typed core).

cli             -> options, errors, commands/, reports/: no business rule, no inner layer
mapping.events  -> never the encoder (events are data; mapping/encode.py makes the bytes)
klaviyo/*       -> never the commands, the pipeline, the state or the export readers
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


def test_the_cli_imports_the_commands_and_the_reports_only() -> None:
    allowed = {"__version__", "errors", "options", "results"}
    inner = {m for m in imported("cli") - allowed if not m.startswith(("commands", "reports"))}
    assert not inner, inner
    assert any(m.startswith("commands") for m in imported("cli"))


@pytest.mark.parametrize(
    "layer", ["state", "mapping", "klaviyo", "inputs", "pipeline", "presend", "proof"]
)
def test_the_cli_does_not_reach_past_the_commands(layer: str) -> None:
    assert not {m for m in imported("cli") if m.split(".")[0] == layer}


def test_the_event_layer_does_not_import_the_encoder() -> None:
    assert "mapping.encode" not in imported("mapping.events")


@pytest.mark.parametrize("module", ["klaviyo.sender", "klaviyo.http", "klaviyo.retry", "klaviyo.throttle",
                                    "klaviyo.answers", "klaviyo.endpoints",
                                    "klaviyo.reading"])  # fmt: skip
def test_the_klaviyo_client_does_not_import_the_orchestration(module: str) -> None:
    forbidden = {"commands", "pipeline", "presend", "state", "inputs", "reports", "proof"}
    assert not {m for m in imported(module) if m.split(".")[0] in forbidden}, imported(module)


@pytest.mark.e2e
def test_help_and_status_import_neither_httpx_nor_the_pipeline() -> None:
    """`--help` and `status` start fast: the heavy layers are imported where they run."""
    code = (
        "import sys, klaviyo_backfill.cli, klaviyo_backfill.results,"
        " klaviyo_backfill.reports.terminal;"
        "print(sorted(m for m in ('httpx', 'phonenumbers', 'klaviyo_backfill.pipeline.orders',"
        " 'klaviyo_backfill.mapping.encode', 'dateutil') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "module", ["klaviyo.sender", "klaviyo.http", "klaviyo.throttle", "klaviyo.retry"]
)
def test_the_sender_reports_waits_without_drawing_them(module: str) -> None:
    """Waits go to an observer the orchestration passes in; progress.py draws them."""
    path = PACKAGE / (module.replace(".", "/") + ".py")
    tree = ast.parse(path.read_text(encoding="utf-8"))
    roots = {
        (node.module or "").split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and not node.level
    } | {a.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
         for a in node.names}  # fmt: skip
    assert "rich" not in roots and "progress" not in imported(module)


def test_no_module_is_a_warehouse() -> None:
    """A module over 600 lines does two jobs (issue #19: the house by stage)."""
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 600}  # fmt: skip
    assert not long, long


def test_the_package_root_holds_the_leaves_and_the_cli_only() -> None:
    """Everything else stands in the folder of its stage."""
    root = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(root) <= 12, root
    stages = {"commands", "inputs", "mapping", "pipeline", "presend", "proof", "reports",
              "state", "klaviyo"}  # fmt: skip
    assert stages <= {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
