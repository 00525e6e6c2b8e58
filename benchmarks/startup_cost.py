"""Cost of the `bai.pth` hook for Python processes that never import mergekit.

    python benchmarks/startup_cost.py [--runs 60]

Times `python -c pass` with the hook installed and with `bai.pth` moved aside
(restored afterwards), interleaved run by run, and reports medians and the difference; also
the hook module's own import time from `python -X importtime`.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

PTH = Path(sysconfig.get_paths()["purelib"]) / "bai.pth"


def once() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return time.perf_counter() - start


def hook_import_us() -> int:
    err = subprocess.run([sys.executable, "-X", "importtime", "-c", "pass"],
                         capture_output=True, text=True, check=True).stderr
    for line in err.splitlines():
        if line.rstrip().endswith("bai_autoload"):
            return int(line.split("|")[1])
    raise SystemExit("bai_autoload was not imported: is the package installed?")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=60)
    args = ap.parse_args()
    if not PTH.is_file():
        raise SystemExit(f"{PTH} not found: install the package first (make setup)")
    cumulative = hook_import_us()
    aside = PTH.with_suffix(".pth.off")
    with_hook, without = [], []
    try:
        for _ in range(args.runs):
            with_hook.append(once())
            PTH.rename(aside)
            try:
                without.append(once())
            finally:
                aside.rename(PTH)
    finally:
        if aside.exists() and not PTH.exists():
            aside.rename(PTH)
    a, b = statistics.median(with_hook), statistics.median(without)
    print(f"| python -c pass ({args.runs} runs each, interleaved) | median (ms) |")
    print("|---|---:|")
    print(f"| without bai.pth | {b * 1e3:.2f} |")
    print(f"| with bai.pth | {a * 1e3:.2f} |")
    print(f"| difference | {(a - b) * 1e3:+.2f} ({(a / b - 1) * 100:+.1f} %) |")
    print(f"\n`-X importtime`: bai_autoload cumulative import {cumulative} us")


if __name__ == "__main__":
    main()
