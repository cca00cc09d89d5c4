"""Cohort throughput: ``seglossbrain batch`` against one ``seglossbrain segment`` process per scan, and batch
split over torchrun ranks.

    python bench/speed/batch.py [--cases 8] [--device cpu|cuda] [--ranks 2] [--model M] [--only batch,...]

Variants: separate, batch, torchrun (the default three), and read-ahead / no-read-ahead (``segment_many`` in
one process, nothing written, with and without reading the next case during the network).

The cases are the real-size heads of ``real_dev/`` (256^3 and 160x192x224 at 1 mm), copied under distinct
names until there are ``--cases`` of them. Every variant runs as fresh processes; the peak resident memory
is sampled from /proc every 0.1 s over the whole process tree (Linux): the largest single process and the
largest sum. Prints a Markdown table to paste into BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import csv
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from SegLossBrainLib.paths import REAL_DEV, data_dir

HEADS = ("bert_fs7.2_norm.nii.gz", "vxm_test_T1norm.nii.gz", "brainchop_t1_crop_unlabeled.nii.gz",
         "mne_sample_T1_skull_unlabeled.nii.gz")
SEGLOSSBRAIN = [sys.executable, "-m", "SegLossBrainLib.cli"]
# segment_many with and without reading ahead (variants read-ahead / no-read-ahead): what the overlap gains
API = """
import sys
from SegLossBrainLib.inference.cohort import segment_many
results = list(segment_many([sys.argv[1]], model=sys.argv[2] if sys.argv[2] != "-" else None, device=sys.argv[3],
                            read_ahead=sys.argv[4] == "1"))
assert all(r.ok for r in results), [r.reason for r in results]
"""


def make_cases(folder: Path, count: int) -> list[Path]:
    source = data_dir() / REAL_DEV
    cases = []
    for number in range(count):
        head = source / HEADS[number % len(HEADS)]
        # Copies, not links: the cohort treats two names of one file as one case.
        cases.append(Path(shutil.copy(head, folder / f"case{number + 1:02d}_{head.name}")))
    return cases


def _tree_rss_mb(root: int) -> tuple[float, float]:
    """(largest process, sum) of resident memory over ``root`` and its descendants, in MB."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                parents[int(entry)] = int(fields[1])
            except (OSError, IndexError, ValueError):
                continue
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in tree]
        tree.update(children)
        frontier += children
    sizes = []
    for pid in tree:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    sizes.append(int(line.split()[1]) / 1024)
        except OSError:
            continue
    return (max(sizes), sum(sizes)) if sizes else (0.0, 0.0)


def run_measured(commands: list[list[str]]) -> dict:
    """Run ``commands`` one after another; wall time and peak memory over all of them."""
    peak_one = peak_sum = 0.0
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    for command in commands:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        stderr = []
        reader = threading.Thread(target=lambda: stderr.append(process.stderr.read()))
        reader.start()
        while process.poll() is None:
            one, total = _tree_rss_mb(process.pid)
            peak_one, peak_sum = max(peak_one, one), max(peak_sum, total)
            time.sleep(0.1)
        reader.join()
        if process.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed ({process.returncode}):\n{''.join(stderr)[-2000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    # CPU seconds depend far less than wall time on what else the machine runs: the overhead that batch removes
    # (imports, model loads) shows in them even when other jobs share the cores.
    return {"wall_s": time.perf_counter() - start, "cpu_s": cpu, "peak_process_mb": peak_one, "peak_total_mb": peak_sum}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--model")
    parser.add_argument("--only", default="separate,batch,torchrun")
    args = parser.parse_args()
    model = ["--model", args.model] if args.model else []
    work = Path(tempfile.mkdtemp(prefix="seglossbrain-bench-batch-"))
    (work / "in").mkdir()
    cases = make_cases(work / "in", args.cases)
    results = {}
    try:
        for variant in args.only.split(","):
            out = work / f"out-{variant}"
            if variant == "separate":
                out.mkdir()
                commands = [SEGLOSSBRAIN + ["segment", str(c), str(out / f"{c.name}_labels.nii.gz"), "--device",
                                            args.device] + model for c in cases]
            elif variant == "batch":
                commands = [SEGLOSSBRAIN + ["batch", str(work / "in"), "--output-dir", str(out), "--device",
                                            args.device] + model]
            elif variant == "torchrun":
                commands = [[sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(args.ranks),
                             "-m", "SegLossBrainLib.cli", "batch", str(work / "in"), "--output-dir", str(out),
                             "--device", args.device] + model]
            elif variant in ("read-ahead", "no-read-ahead"):
                commands = [[sys.executable, "-c", API, str(work / "in"), args.model or "-", args.device,
                             "1" if variant == "read-ahead" else "0"]]
            else:
                raise SystemExit(f"unknown variant {variant!r}")
            results[variant] = run_measured(commands)
            if variant in ("batch", "torchrun"):
                rows = list(csv.DictReader(open(out / "volumes.csv")))
                assert len(rows) == len(cases) and all(r["status"] == "ok" for r in rows), rows
                results[variant]["case_s"] = sum(float(r["seconds"]) for r in rows) / len(rows)
            print(variant, results[variant], flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = results.get("separate", {}).get("wall_s")
    print(f"\n{len(cases)} real-size heads ({', '.join(HEADS)} in turn), device {args.device}\n")
    print("| variant | wall | scans/min | vs separate | CPU s per scan | peak RSS (largest process / all processes) "
          "| mean case time |")
    print("|---|---|---|---|---|---|---|")
    for variant, r in results.items():
        ratio = f"{base / r['wall_s']:.2f}x" if base else "-"
        case = f"{r['case_s']:.2f} s" if "case_s" in r else "-"
        print(f"| {variant} | {r['wall_s']:.1f} s | {60 * len(cases) / r['wall_s']:.2f} | {ratio} | "
              f"{r['cpu_s'] / len(cases):.1f} | "
              f"{r['peak_process_mb']:.0f} / {r['peak_total_mb']:.0f} MB | {case} |")


if __name__ == "__main__":
    main()
