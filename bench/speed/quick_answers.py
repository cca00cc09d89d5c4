"""How fast the commands that do no segmentation answer: ``--help``, ``info``, and refused bad input.

    python bench/speed/quick_answers.py [--repeats 5]

Each is a fresh ``python -m SegLossBrainLib.cli`` process, timed from outside (interpreter start included), median
of ``--repeats``. The refusals: a missing input file, a label map given as the input (refused once read: the
shipped demo's labels), a truncated .nii.gz (refused by the size check before any voxel is used). Issue 30's
target: each within 1 s.
"""
from __future__ import annotations

import argparse
import gzip
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "Resources" / "Samples"


def timed(arguments: list[str], expected_code: int) -> float:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "SegLossBrainLib.cli", *arguments], capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != expected_code:
        raise SystemExit(f"{arguments}: exit {done.returncode}, expected {expected_code}\n{done.stderr}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        truncated = folder / "truncated.nii.gz"
        data = gzip.decompress((SAMPLES / "synthetic_t1_demo.nii.gz").read_bytes())
        truncated.write_bytes(gzip.compress(data[: len(data) // 2]))
        cases = {
            "`seglossbrain --help`": (["--help"], 0),
            "`seglossbrain segment --help`": (["segment", "--help"], 0),
            "`seglossbrain info`": (["info"], 0),
            "refused: missing input": (["segment", str(folder / "none.nii.gz"), str(folder / "o1.nii.gz")], 2),
            "refused: a label map as input": (["segment", str(SAMPLES / "synthetic_t1_demo_labels.nii.gz"),
                                               str(folder / "o2.nii.gz")], 2),
            "refused: a truncated .nii.gz": (["segment", str(truncated), str(folder / "o3.nii.gz")], 2),
        }
        print(f"| command | median s | runs |\n|---|---|---|")
        for name, (arguments, code) in cases.items():
            runs = [timed(arguments, code) for _ in range(args.repeats)]
            print(f"| {name} | {statistics.median(runs):.2f} | {' / '.join(f'{r:.2f}' for r in runs)} |")


if __name__ == "__main__":
    main()
