"""Make docs/verify-report.png: the `verify --html` report of a send that Klaviyo (the test
stand-in) lost 1% of, rendered in headless Chromium (Debian's `chromium`), quantised with
`pngquant` when it is installed.

    .venv/bin/python docs/screenshot.py
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import corpus  # noqa: E402
import standin as st  # noqa: E402

KEY = "pk_test_0123456789abcdef"
CLI = str(Path(sys.executable).parent / "klaviyo-backfill")
OUT = ROOT / "docs" / "verify-report.png"


def run(cwd: Path, *args: str) -> None:
    # its own state folder: the checkpoint and the account ledger, not the user's
    env = dict(os.environ, KLAVIYO_API_KEY=KEY, XDG_STATE_HOME=str(cwd / "state"))
    subprocess.run([CLI, *args], cwd=cwd, env=env, check=False, capture_output=True)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        start = datetime(2022, 1, 1, tzinfo=UTC)
        orders = [o for o in corpus.make_orders(3000, 17, "shopify") if o.created_at >= start]
        corpus.write_shopify_csv(orders, cwd / "orders.csv")
        with st.StandIn(api_key=KEY, faults=st.Faults(lost_after_ack=0.01, seed=5)) as s:
            run(
                cwd, "send", "orders.csv", "--base-url", s.url, "-q", "--rate-limit", "100/s,1000/m"
            )
            (checkpoint,) = (cwd / "state" / "klaviyo-backfill" / "checkpoints").glob("*.sqlite")
            db = sqlite3.connect(checkpoint)  # as if sent an hour ago: a final answer
            db.execute("UPDATE sent_totals SET last_at = last_at - 3600")
            db.commit()
            db.close()
            run(cwd, "verify", "orders.csv", "--base-url", s.url, "--html", "verify.html")
        shot = cwd / "shot.png"
        subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu",
                        "--disable-background-networking", "--disable-component-update",
                        "--disable-sync", "--no-first-run", f"--user-data-dir={cwd / 'profile'}",
                        "--hide-scrollbars", f"--screenshot={shot}", "--window-size=860,1500",
                        (cwd / "verify.html").as_uri()], check=True, capture_output=True)  # fmt: skip
        if shutil.which("pngquant"):
            subprocess.run(["pngquant", "--force", "--quality", "60-85", "--output", str(OUT),
                            str(shot)], check=True)  # fmt: skip
        else:
            shutil.copy(shot, OUT)
    print(f"{OUT} ({OUT.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
