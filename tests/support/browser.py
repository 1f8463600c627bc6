"""Debian's chromium driven by Playwright: found (or installed with apt) and launched quietly, headless."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]


def chromium_path() -> str:
    """/usr/bin/chromium; installed from Debian's packages first if missing and we may (root)."""
    found = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if found:
        return found
    if os.geteuid() != 0:
        raise RuntimeError("chromium is missing: run `apt-get install -y chromium` (or `make browser`) as root")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=True, env=env)
    return shutil.which("chromium") or "/usr/bin/chromium"
