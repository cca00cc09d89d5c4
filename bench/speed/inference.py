"""Inference benchmarks: end-to-end ``segment`` on a 256^3 1 mm volume, and the network's forward pass at
128^3 against this machine's measured 3D-convolution throughput.

    python bench/speed/inference.py [--model PATH] [--threads N] [--device cpu|cuda] [--volume FILE]

Each end-to-end run happens in a fresh child process so that its peak resident memory (ru_maxrss) is its
own. Prints a Markdown table to paste into BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from SegLossBrainLib.paths import REAL_DEV, find_data_dir

ROOT = Path(__file__).resolve().parents[2]
HEAD = "mne_sample_T1_skull_unlabeled.nii.gz"  # in the data folder's real_dev/

CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
import torch
torch.set_num_threads(int(sys.argv[4]))
from SegLossBrainLib.imageio.volumes import read_image, write_image
from SegLossBrainLib.inference.segment import segment
image = read_image(sys.argv[1])
t1 = time.perf_counter()
result = segment(image, model=sys.argv[3] if sys.argv[3] != "-" else None, device=sys.argv[5])
t2 = time.perf_counter()
write_image(result.labels, sys.argv[2])
t3 = time.perf_counter()
print(json.dumps({"startup_and_read_s": t1 - t0, "segment_s": t2 - t1, "write_s": t3 - t2, "total_s": t3 - t0,
                  "grid": list(result.network_grid.shape),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def volume_256(path: Path | None) -> Path:
    """A 256^3 1 mm head: the given file, the MNE sample head of the data folder, or the demo volume padded."""
    import SimpleITK as sitk

    if path:
        return path
    data = find_data_dir()
    if data and (data / REAL_DEV / HEAD).is_file():
        return data / REAL_DEV / HEAD
    demo = sitk.ReadImage(str(ROOT / "Resources" / "Samples" / "synthetic_t1_demo.nii.gz"))
    pad = [(256 - s) // 2 for s in demo.GetSize()]
    padded = sitk.ConstantPad(demo, pad, [256 - s - p for s, p in zip(demo.GetSize(), pad)], 0)
    out = Path(tempfile.gettempdir()) / "seglossbrain_bench_256.nii.gz"
    sitk.WriteImage(padded, str(out))
    return out


def end_to_end(volume: Path, model: str, threads: int, device: str, repeats: int) -> list[dict]:
    runs = []
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(repeats):
            done = subprocess.run([sys.executable, "-c", CHILD, str(volume), f"{folder}/labels.nii.gz", model,
                                   str(threads), device], capture_output=True, text=True, check=True)
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return runs


def conv_throughput(device: str, seconds: float = 3.0) -> float:
    """GFLOP/s of one large 3^3 convolution (48 -> 48 channels, 64^3): what this machine's conv3d can do."""
    conv = torch.nn.Conv3d(48, 48, 3, padding=1).to(device).eval()
    x = torch.randn(1, 48, 64, 64, 64, device=device)
    flops = 2 * 48 * 48 * 27 * 64 ** 3
    with torch.inference_mode():
        conv(x)
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            conv(x)
            count += 1
        if device == "cuda":
            torch.cuda.synchronize()
    return flops * count / (time.perf_counter() - start) / 1e9


def forward(size: int, device: str, repeats: int = 3, dtype=None, channels_last: bool = False) -> tuple[float, float]:
    """(best wall time s, FLOP count) of the Wong 2018 forward pass at size^3."""
    from torch.utils.flop_counter import FlopCounterMode

    from SegLossBrainLib.networks import build_network

    net = build_network("wong2018").to(device).eval()
    x = torch.randn(1, 1, size, size, size, device=device)
    if channels_last:
        net, x = net.to(memory_format=torch.channels_last_3d), x.contiguous(memory_format=torch.channels_last_3d)
    with torch.inference_mode():
        with FlopCounterMode(display=False) as counter:
            net(x)
        flops = counter.get_total_flops()
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            if dtype is not None:
                with torch.autocast(device_type=device, dtype=dtype):
                    net(x)
            else:
                net(x)
            if device == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - start)
    return best, flops


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="-", help="model file (default: the shipped model)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--volume", type=Path)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    volume = volume_256(args.volume)
    runs = end_to_end(volume, args.model, args.threads, args.device, args.repeats)
    best = min(runs, key=lambda r: r["total_s"])
    conv = conv_throughput(args.device)
    seconds, flops = forward(128, args.device, channels_last=args.device == "cpu")
    plain_seconds, _ = forward(128, args.device)
    print(f"volume: {volume.name}, device {args.device}, {args.threads} threads, torch {torch.__version__}")
    print("| measure | value |\n|---|---|")
    print(f"| end-to-end segment, 256^3 1 mm (best of {len(runs)}; network grid {best['grid']}) | "
          f"{best['total_s']:.2f} s (process start + read {best['startup_and_read_s']:.2f} s, segment "
          f"{best['segment_s']:.2f} s, write {best['write_s']:.2f} s) |")
    print(f"| peak RSS of that process | {max(r['peak_rss_mb'] for r in runs):.0f} MB |")
    print(f"| forward pass 128^3 (as segment runs it{', channels-last' if args.device == 'cpu' else ''}) | "
          f"{seconds:.2f} s, {flops / 1e9:.0f} GFLOP -> {flops / seconds / 1e9:.0f} GFLOP/s |")
    print(f"| forward pass 128^3, default memory format | {plain_seconds:.2f} s |")
    print(f"| measured conv3d throughput (48->48, 3^3, 64^3) | {conv:.0f} GFLOP/s |")
    print(f"| forward / conv throughput | {flops / seconds / 1e9 / conv:.2f} |")
    if args.device == "cpu":
        bf16_seconds, _ = forward(128, "cpu", dtype=torch.bfloat16, channels_last=True)
        print(f"| forward pass 128^3 under bf16 autocast (CPU) | {bf16_seconds:.2f} s |")


if __name__ == "__main__":
    main()
