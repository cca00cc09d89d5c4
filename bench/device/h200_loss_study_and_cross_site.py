"""Second call on the lent H200 in session 7: the loss study (issue 16) at 3 mm, and issue 13's cross-site check.

    python3 bench/device/h200_loss_study_and_cross_site.py --out $OUT --deadline 480      # on the device machine
    python3 bench/device/h200_loss_study_and_cross_site.py --out /tmp/s7b --smoke         # plumbing check on a CPU

The 32 Wong-network runs of the study (8 losses x learning rates 1e-3, 1e-4 x seeds 0, 1) are trained as 16
``seglossbrain study`` processes side by side on the one GPU, one per (loss, learning rate), each running its
two seeds in turn into its own folder. The steps per run are sized to the call from a measured speed: 16
``bench/speed/study_step.py`` probes run together first. The folders are then merged into one study (one
``study.json`` listing every run) and ``seglossbrain study --report-only`` scores and reports it exactly as on
a CPU. The V-Net arm (trained with the best loss, chosen after the others) does not fit this call.

Alongside, issue 13's cross-site check: the fine-tuning defaults on ONE real dev scan (no validation case: the
single-case limit applies), scored on the other, from the shipped model and from the synthetic-only model.

As run in session 7 the speed probes lacked ``--device`` and timed the CPU (1.65 s/step with 16 at once), so the
runs were sized to 300 steps: far from converged (docs/LOSS_STUDY.md). The probes now pass the device.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from h200_mixed_training_and_finetune_runs import ROOT, Clock, real, set_up  # noqa: E402

ARMS = ("dice", "logdice", "wce", "gdl", "explog", "explog_g1", "explog_g2", "dice_ce")
LRS = ("1e-3", "1e-4")
SEEDS = "0,1"
REPORT_RESERVE_S = 100
VALIDATION_S = 2.0  # one study validation on the GPU (BN re-estimation, 4 held-out images, 2 real scans), a guess


def study_args(out: Path, steps: int, validate_every: int, arms: str, lrs: str, smoke: bool) -> list:
    return [sys.executable, "-m", "SegLossBrainLib.cli", "study", "--out", str(out), "--steps", str(steps),
            "--grid-spacing", "3", "--patch-size", "64", "--arms", arms, "--learning-rates", lrs, "--seeds", SEEDS,
            "--lr-schedule", "poly", "--validate-every", str(validate_every), "--validation-bn-samples", "16",
            "--validation-draws", "2", "--precision", "bf16", "--threads", "1", "--device", "cpu" if smoke else "cuda"]


def merge(subs: list[Path], merged: Path) -> None:
    """One study folder from the per-(loss, learning rate) folders: their runs side by side, one manifest."""
    merged.mkdir(parents=True, exist_ok=True)
    manifest = None
    for sub in subs:
        if not (sub / "study.json").is_file():
            continue
        part = json.loads((sub / "study.json").read_text())
        if manifest is None:
            manifest = dict(part, runs={})
        manifest["runs"].update(part["runs"])
        for rid in part["runs"]:
            if (sub / rid).is_dir():
                shutil.copytree(sub / rid, merged / rid, dirs_exist_ok=True)
    manifest["settings"].update(arms=list(ARMS), learning_rates=[float(v) for v in LRS], seeds=[0, 1])
    (merged / "study.json").write_text(json.dumps(manifest, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--deadline", type=float, default=480)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    clock = Clock(args.deadline)
    out = Path(args.out)
    work = Path("/tmp/s7work") if not args.smoke else out / "work"
    work.mkdir(parents=True, exist_ok=True)
    env = set_up(work, args.smoke)
    env["OMP_NUM_THREADS"] = "1"
    device = "cpu" if args.smoke else "cuda"
    clock.log("set up")

    # issue 13 cross-site: 2 directions x 2 base models, in the background
    cross = []
    for base in ("wong2018-explog-fs", "wong2018-explog"):
        for train, test in (("bert", "vxm"), ("vxm", "bert")):
            folder = work / "cross_site" / f"{base}_{train}_to_{test}"
            folder.mkdir(parents=True, exist_ok=True)
            command = [sys.executable, "bench/experiments/finetune_site.py", "--train", real(env, train),
                       "--test", real(env, test), "--base", base, "--device", device, "--threads", "1",
                       "--out", str(folder / "result.json")]
            if args.smoke:
                command += ["--set", "patch_size=32", "--set", "steps=2"]
            cross.append(subprocess.Popen(command, env=env, cwd=ROOT, stdout=open(folder / "log.txt", "w"),
                                          stderr=subprocess.STDOUT))

    # speed: 16 probes together, as the 16 study processes will run
    probes = [subprocess.Popen([sys.executable, "bench/speed/study_step.py", "--networks", "wong2018", "--precision",
                                "bf16", "--threads", "1", "--batch", "1", "--steps", "3" if args.smoke else "60",
                                "--warmup", "10" if not args.smoke else "1", "--maps", "3", "--device", device],
                               env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
              for _ in range(2 if args.smoke else 16)]
    walls = []
    for probe in probes:
        text = probe.communicate()[0]
        found = re.findall(r"\| wong2018 \| bf16 \| 1 \| 1 \| ([0-9.]+) \|", text)
        walls += [float(v) for v in found] or []
        if not found:
            print(text[-2000:])
    wall = max(walls) if walls else 1.0
    avail = clock.left() - REPORT_RESERVE_S - 15
    per_run_s = avail / 2 * 0.8  # two seeds in turn, a margin for start-up and the checkpoints
    steps = int(per_run_s / (wall + VALIDATION_S / 100) // 100 * 100)
    steps = 4 if args.smoke else max(300, min(6000, steps))
    validate_every = 2 if args.smoke else max(50, steps // 12 // 50 * 50)
    clock.log(f"16 probes together: {wall:.3f} s/step (slowest); {avail:.0f} s left for training -> "
              f"{steps} steps per run, validation every {validate_every}")

    subs, procs = [], []
    arms = ARMS[:2] if args.smoke else ARMS
    for arm in arms:
        for lr in LRS:
            sub = work / "study_parts" / f"{arm}_{lr}"
            subs.append(sub)
            sub.parent.mkdir(parents=True, exist_ok=True)
            procs.append(subprocess.Popen(study_args(sub, steps, validate_every, arm, lr, args.smoke), env=env,
                                          cwd=ROOT, stdout=open(f"{sub}.log", "w"), stderr=subprocess.STDOUT))
    for proc in procs:
        try:
            proc.wait(timeout=max(1, clock.left() - REPORT_RESERVE_S))
        except subprocess.TimeoutExpired:
            proc.terminate()  # SIGTERM: the run saves a checkpoint; the report marks it unfinished
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    clock.log("study runs ended: " + ", ".join(str(p.returncode) for p in procs))
    for proc in cross:
        try:
            proc.wait(timeout=max(1, clock.left() - REPORT_RESERVE_S + 30))
        except subprocess.TimeoutExpired:
            proc.kill()
    clock.log("cross-site runs ended: " + ", ".join(str(p.returncode) for p in cross))

    merged = work / "study"
    merge(subs, merged)
    report = study_args(merged, steps, validate_every, ",".join(arms), ",".join(LRS), args.smoke) + ["--report-only"]
    if args.smoke:
        manifest = json.loads((merged / "study.json").read_text())
        manifest["settings"]["arms"] = list(arms)
        (merged / "study.json").write_text(json.dumps(manifest, indent=1))
    with open(work / "report.log", "w") as handle:
        try:
            subprocess.run(report, env=env, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT,
                           timeout=max(5, clock.left() - 10))
        except subprocess.TimeoutExpired:
            clock.log("report: killed at the deadline")
    clock.log("reported")

    out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out / "study_results.tar.gz", "w:gz") as tar:
        for path in sorted(work.rglob("*")):
            keep = path.is_file() and path.suffix not in (".pt", ".safetensors", ".nii", ".gz") \
                and not {"data", "site-packages", "store", "study_parts"} & set(path.relative_to(work).parts[:1])
            if keep or (path.is_file() and path.parent == work / "study_parts" and path.suffix == ".log"):
                tar.add(path, arcname=str(path.relative_to(work)))
    clock.log("packed")


if __name__ == "__main__":
    main()
