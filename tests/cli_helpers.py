"""Running the real CLI in end-to-end tests: the console script of this venv, an environment
without the user's KLAVIYO_* variables, and a free port for a stand-in to listen on."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

CLI = shutil.which("klaviyo-backfill", path=str(Path(sys.executable).parent)) or str(
    Path(sys.executable).parent / "klaviyo-backfill"
)
FAST = ["--rate-limit", "100/s,1000/m", "-q"]  # far below the stand-in's limits' wait


def run(cwd: Path, key: str, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """The CLI with KLAVIYO_API_KEY=key (and no other KLAVIYO_* variable), in `cwd`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KLAVIYO_")}
    env.update(KLAVIYO_API_KEY=key, COLUMNS="200")
    return subprocess.run([CLI, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
