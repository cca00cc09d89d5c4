"""Where the seconds of one `seglossbrain segment` go: a stage table for one 256^3 head, in fresh processes.

    python bench/speed/stages.py [--volume FILE] [--model NAME|PATH] [--repeats 3] [--threads 2]
                                 [--precision auto|fp32|bf16] [--isa native|avx2] [--engine openvino|torch]
                                 [--checkout OTHER/SegLossBrain]

Each repeat runs the stages one after the other in a new Python process, exactly as ``segment`` chains them
(``inference/segment.py``), timing each with ``time.perf_counter``: interpreter start and imports, read, grid
planning, resampling onto the network grid, model load (with its checksum), the network, probabilities back to
the input grid, QC and volumes, write. ``--isa avx2`` limits oneDNN and ATen to AVX2 (``ONEDNN_MAX_CPU_ISA``,
``ATEN_CPU_CAPABILITY``): an approximation of a CPU without AVX-512/bf16 on this one. ``--engine`` picks what
runs the network (the stages of the OpenVINO engine: no torch import, a graph built and compiled). Prints the median of each
stage over the repeats as a Markdown table, and the whole CLI's end-to-end wall time (a separate
``seglossbrain segment`` process, the way a user runs it) with its peak RSS.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inference import volume_256  # noqa: E402  (the same test head as bench/speed/inference.py)

AFTER_NETWORK = r"""
quality = qc.check_input(probabilities, network_grid.spacing, False)
labels, _ = grids.probabilities_to_image(probabilities, network_grid, image, False); mark("probabilities back")
try:  # checkouts since the cortex boundary refinement (segment's default) have this stage
    from SegLossBrainLib.postprocessing.pial_boundary import refine_pial_boundary
except ImportError:
    pass
else:
    labels, _ = refine_pial_boundary(labels, image, probabilities, network_grid); mark("pial refinement")
volumes = structure_volumes_ml(labels)
qc.check_output(quality, labels, volumes); mark("QC and volumes")
write_image(labels, sys.argv[2]); mark("write")
stages = {b[0]: b[1] - a[1] for a, b in zip(marks, marks[1:])}
"""

CHILD = r"""
import json, resource, sys, time
marks = [("start", time.perf_counter())]
def mark(name):
    marks.append((name, time.perf_counter()))
import torch, SimpleITK as sitk
torch.set_num_threads(int(sys.argv[4]))
from SegLossBrainLib.imageio.volumes import read_image, write_image
from SegLossBrainLib.inference import segment as seg
from SegLossBrainLib.device import select_device
from SegLossBrainLib.evaluation.volumes import structure_volumes_ml
from SegLossBrainLib.postprocessing import qc
from SegLossBrainLib.preprocessing import grid as grids
mark("imports (torch, SimpleITK, engine)")
image = read_image(sys.argv[1]); mark("read")
seg.check_image(image)
network_grid = grids.plan_network_grid(image); mark("check and plan the grid")
tensor = grids.to_network(image, network_grid); mark("resample onto the network grid")
device = select_device("cpu")
network, metadata = seg.load_network(sys.argv[3] if sys.argv[3] != "-" else None, device); mark("load the model")
precision = sys.argv[5]
try:
    probabilities = seg.predict_probabilities(network, tensor, device, precision=precision)
except TypeError:  # an engine from before --precision (fp32 on CPUs)
    probabilities = seg.predict_probabilities(network, tensor, device)
mark("network")
""" + AFTER_NETWORK + r"""
print(json.dumps({"stages": stages, "total_s": marks[-1][1] - marks[0][1], "grid": list(network_grid.shape),
                  "dtype": str(seg.autocast_dtype(device, precision)) if hasattr(seg, "autocast_dtype") else "None",
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

CHILD_OPENVINO = r"""
import json, resource, sys, time
marks = [("start", time.perf_counter())]
def mark(name):
    marks.append((name, time.perf_counter()))
import numpy as np, SimpleITK as sitk, openvino
from SegLossBrainLib.imageio.volumes import check_image, read_image, write_image
from SegLossBrainLib.cpu_engine.runner import OpenVinoNetwork
from SegLossBrainLib.models.store import resolve_model
from SegLossBrainLib.evaluation.volumes import structure_volumes_ml
from SegLossBrainLib.postprocessing import qc
from SegLossBrainLib.preprocessing import grid as grids
mark("imports (numpy, SimpleITK, OpenVINO, engine; no torch)")
image = read_image(sys.argv[1]); mark("read")
check_image(image)
network_grid = grids.plan_network_grid(image); mark("check and plan the grid")
network = OpenVinoNetwork(resolve_model(sys.argv[3] if sys.argv[3] != "-" else None), sys.argv[5])
mark("load the model (sha256 checked)")
from concurrent.futures import ThreadPoolExecutor
with ThreadPoolExecutor(1) as pool:  # as inference/segment.py: compiling while resampling
    compiling = pool.submit(network.compile_for, network_grid.shape)
    array = grids.network_input(image, network_grid)
    compiling.result()
mark("resample onto the network grid, building and compiling the graph meanwhile")
probabilities = network.predict(array); mark("network")
""" + AFTER_NETWORK + r"""
print(json.dumps({"stages": stages, "total_s": marks[-1][1] - marks[0][1], "grid": list(network_grid.shape),
                  "dtype": "openvino " + network.precision, "torch_imported": "torch" in sys.modules,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

ISA = {"native": {}, "avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}}


def run_stages(volume: Path, model: str, threads: int, precision: str, env: dict, out: str, engine: str) -> dict:
    started = time.perf_counter()
    child = CHILD_OPENVINO if engine == "openvino" else CHILD
    done = subprocess.run([sys.executable, "-c", child, str(volume), out, model, str(threads), precision],
                          capture_output=True, text=True, env=env)
    if done.returncode:
        raise SystemExit(done.stderr)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_s"] = time.perf_counter() - started  # interpreter start included
    result["stages"] = {"interpreter start": result["process_s"] - result["total_s"], **result["stages"]}
    return result


def run_cli(volume: Path, model: str, threads: int, precision: str, env: dict, out: str, engine: str) -> dict:
    """The command a user types, timed from outside, with the peak RSS of the child (GNU time's format)."""
    command = [sys.executable, "-m", "SegLossBrainLib.cli", "segment", str(volume), out]  # torch uses every core by default
    if model != "-":
        command += ["--model", model]
    if precision != "auto":
        command += ["--precision", precision]
    if engine != "auto":  # (an older checkout has no --engine: leave it out there)
        command += ["--engine", engine]
    started = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-f", "%M"] + command, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(done.stderr)
    return {"wall_s": wall, "peak_rss_mb": int(done.stderr.strip().splitlines()[-1]) / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--volume", type=Path, help="a 256^3 head (default: the MNE sample head of the data folder)")
    parser.add_argument("--model", default="-", help="model name or file (default: the installed default)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--isa", default="native", choices=sorted(ISA))
    parser.add_argument("--no-cli", action="store_true", help="skip the end-to-end CLI runs")
    parser.add_argument("--engine", default="auto", choices=["auto", "openvino", "torch"],
                        help="what runs the network (auto: as the command picks it; the stage script then times the "
                             "OpenVINO stages, or the torch ones with --checkout, an engine from before OpenVINO)")
    parser.add_argument("--checkout", type=Path,
                        help="the SegLossBrain/ folder of another checkout (e.g. a git worktree of an older commit) "
                             "whose engine the child processes import instead: before/after tables")
    args = parser.parse_args()
    volume = volume_256(args.volume)
    env = {**os.environ, **ISA[args.isa]}
    if args.checkout:
        env["PYTHONPATH"] = os.pathsep.join([str(args.checkout.resolve()), env.get("PYTHONPATH", "")])
    with tempfile.TemporaryDirectory() as folder:
        stage_engine = args.engine if args.engine != "auto" else ("torch" if args.checkout else "openvino")
        runs = [run_stages(volume, args.model, args.threads, args.precision, env, f"{folder}/s{i}.nii.gz",
                           stage_engine) for i in range(args.repeats)]
        cli = [] if args.no_cli else [run_cli(volume, args.model, args.threads, args.precision, env,
                                              f"{folder}/c{i}.nii.gz", args.engine) for i in range(args.repeats)]
    print(f"checkout {args.checkout or 'this one'}, engine {args.engine}, volume {volume.name}, network grid {runs[0]['grid']}, autocast {runs[0]['dtype']}, isa {args.isa}, "
          f"{args.threads} threads, median of {args.repeats}, load average before: {os.getloadavg()[0]:.2f}\n")
    print("| stage | seconds (median) | runs |\n|---|---|---|")
    for stage in runs[0]["stages"]:
        values = [r["stages"][stage] for r in runs]
        print(f"| {stage} | {statistics.median(values):.2f} | {' / '.join(f'{v:.2f}' for v in values)} |")
    totals = [r["process_s"] for r in runs]
    print(f"| **whole process (stages in one script)** | **{statistics.median(totals):.2f}** | "
          f"{' / '.join(f'{v:.2f}' for v in totals)} |")
    print(f"\npeak RSS of the stage script: {statistics.median(r['peak_rss_mb'] for r in runs):.0f} MB")
    if cli:
        walls = [c["wall_s"] for c in cli]
        print(f"`seglossbrain segment` end to end: median {statistics.median(walls):.2f} s "
              f"({' / '.join(f'{w:.2f}' for w in walls)}), peak RSS {max(c['peak_rss_mb'] for c in cli):.0f} MB")


if __name__ == "__main__":
    main()
