"""``seglossbrain segment`` of two checkouts, run alternately: a before/after comparison that a drifting machine
cannot bias (each pair runs back to back).

    python bench/speed/cli_pairs.py --before OLD/SegLossBrain [--after SegLossBrain] [--pairs 7] [--isa avx2]

Each run is a fresh ``python -m SegLossBrainLib.cli segment`` of the 256³ test head (as ``stages.py``), the
checkout's engine put first on ``PYTHONPATH``, default options. Prints the median wall time of each side with its
runs, and the median of the paired ratios.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inference import volume_256  # noqa: E402
from stages import ISA  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def run(checkout: Path, volume: Path, output: str, env: dict) -> float:
    env = {**env, "PYTHONPATH": os.pathsep.join([str(checkout.resolve()), env.get("PYTHONPATH", "")])}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "SegLossBrainLib.cli", "segment", str(volume), output,
                           "--overwrite"], capture_output=True, text=True, env=env)
    if done.returncode:
        raise SystemExit(done.stderr)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", type=Path, required=True, help="the SegLossBrain/ folder of the older checkout")
    parser.add_argument("--after", type=Path, default=ROOT / "SegLossBrain")
    parser.add_argument("--pairs", type=int, default=7)
    parser.add_argument("--volume", type=Path)
    parser.add_argument("--isa", default="native", choices=sorted(ISA))
    args = parser.parse_args()
    volume = volume_256(args.volume)
    env = {**os.environ, **ISA[args.isa]}
    times = {"before": [], "after": []}
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(args.pairs):
            for side in times:
                times[side].append(run(getattr(args, side), volume, f"{folder}/{side}.nii.gz", env))
    for side, values in times.items():
        print(f"{side}: median {statistics.median(values):.2f} s ({' / '.join(f'{v:.2f}' for v in values)})")
    ratios = [a / b for a, b in zip(times["after"], times["before"])]
    print(f"after / before, median of the pairs: {statistics.median(ratios):.2f} (isa {args.isa})")


if __name__ == "__main__":
    main()
