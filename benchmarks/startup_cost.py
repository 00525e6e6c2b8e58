"""Cost of the `bai.pth` hook: for any Python process, and for `import openrlhf`.

    python benchmarks/startup_cost.py [--runs 60]

Times `python -c pass` and `python -c "import openrlhf"` (where the hook arms the OpenRLHF
hooks) with the hook installed and with `bai.pth` moved aside (restored afterwards),
interleaved run by run, and reports medians and the difference; also the hook module's own
import time from `python -X importtime`.
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
CODES = ("pass", "import openrlhf")


def once(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
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
    with_hook: dict[str, list[float]] = {c: [] for c in CODES}
    without: dict[str, list[float]] = {c: [] for c in CODES}
    try:
        for _ in range(args.runs):
            for code in CODES:
                with_hook[code].append(once(code))
            PTH.rename(aside)
            for code in CODES:
                without[code].append(once(code))
            aside.rename(PTH)
    finally:
        if aside.exists() and not PTH.exists():
            aside.rename(PTH)
    print(f"| command ({args.runs} runs each, interleaved) | without bai.pth (ms) | "
          "with bai.pth (ms) | difference |")
    print("|---|---:|---:|---:|")
    for code in CODES:
        a, b = statistics.median(with_hook[code]), statistics.median(without[code])
        print(f"| `python -c \"{code}\"` | {b * 1e3:.1f} | {a * 1e3:.1f} | "
              f"{(a - b) * 1e3:+.1f} ms ({(a / b - 1) * 100:+.1f} %) |")
    print(f"\n`-X importtime`: bai_autoload cumulative import {cumulative} us")


if __name__ == "__main__":
    main()
