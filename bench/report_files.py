"""What every benchmark report does with its files: the JSON, the markdown (with hand-written notes), plots."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.procs import BENCH_VENV, ROOT


def plot_with_matplotlib(module: str, json_path: Path, out_dir: Path) -> str:
    """Run `python -m module json out` with whichever Python has matplotlib (the project's or the bench venv's)."""
    for py in (sys.executable, str(BENCH_VENV / "bin" / "python")):
        if not Path(py).exists():
            continue
        if subprocess.run([py, "-c", "import matplotlib"], capture_output=True).returncode != 0:
            continue
        r = subprocess.run([py, "-m", module, str(json_path), str(out_dir)], cwd=ROOT, capture_output=True, text=True)
        return "plotted" if r.returncode == 0 else f"plot failed: {r.stderr[-500:]}"
    return "matplotlib not found: no plots"


def write_results(
    stem: str,
    results: dict[str, Any],
    out_dir: Path,
    markdown: Callable[[dict[str, Any], str | None], str],
    plotter: str,
) -> None:
    """<stem>.json, <stem>.md (including <stem>_notes.md when present) and the plots, in `out_dir`."""
    json_path = out_dir / f"{stem}.json"
    json_path.write_text(json.dumps(results, indent=1, ensure_ascii=False))
    notes_path = out_dir / f"{stem}_notes.md"
    notes = notes_path.read_text() if notes_path.exists() else None
    (out_dir / f"{stem}.md").write_text(markdown(results, notes))
    print(plot_with_matplotlib(plotter, json_path, out_dir), flush=True)
