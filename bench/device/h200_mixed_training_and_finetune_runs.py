"""What ran on the lent H200 in session 7 (issues 13 and 17): one prepared script, one call, a hard deadline.

    python3 bench/device/h200_mixed_training_and_finetune_runs.py --out $OUT --deadline 540        # on the device machine
    python3 bench/device/h200_mixed_training_and_finetune_runs.py --out /tmp/s7 --smoke            # plumbing check on a CPU

The device machine is bare and has no SimpleITK, and nothing can be fetched there, so the call carries
``.devcarry/`` (git-ignored, made by ``bench/device/pack_devcarry.sh``): SimpleITK unpacked from its wheel
(xz), the 20 training label maps (uint16, same grids and values, xz) and the two labelled real dev scans.

Phases (each checks the time left; whatever did not fit is reported, not faked):
1. set-up; the synthetic site's cases (issue 13's proxy) are rendered on the CPUs while
2. wave 1 of issue 17's mixed runs trains on the GPU: bert only, vxm only, both (1200 steps each: the two
   leave-one-out directions and the candidate);
3. issue 13: the fine-tuning defaults timed ALONE on the GPU (finetune_site.py: 3 site cases, a 4th for
   validation, scored on 6 others), because the issue's GPU target is a wall time;
4. wave 2 (longer runs, another real fraction, another seed), sized to the time left from wave 1's speed;
5. every finished run judged: held-out synthetic maps 19-20 (compare_models.py, 24 images, paired) and the
   robustness probes of the real dev scans (robustness_probes.py).
Results: ``results.tar.gz`` (logs, JSON, CSV) and the weights of the runs named in ``KEEP``.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CARRY = ROOT / ".devcarry"
BASE = "Resources/Models/wong2018-explog.safetensors"  # what the shipped fs model was continued from
SHIPPED = "Resources/Models/wong2018-explog-fs.safetensors"
SCANS = {"bert": ("bert_fs7.2_norm.nii.gz", "bert_fs7.2_aseg.nii.gz"),
         "vxm": ("vxm_test_T1norm.nii.gz", "vxm_test_aseg.nii.gz")}
# name: (scans trained on, real fraction, steps, seed); the real validation pair is the scan NOT trained on
WAVE1 = {"bert1200": (("bert",), 0.5, 1200, 18), "vxm1200": (("vxm",), 0.5, 1200, 18),
         "both1200": (("bert", "vxm"), 0.5, 1200, 18)}
WAVE2 = {"bert3000": (("bert",), 0.5, 3000, 18), "both3000": (("bert", "vxm"), 0.5, 3000, 18),
         "bert1200f25": (("bert",), 0.25, 1200, 18), "bert1200s19": (("bert",), 0.5, 1200, 19)}
KEEP = ("both1200", "both3000", "bert1200", "bert3000")
SITE_MAPS = ("01", "02", "03", "04", "15", "16", "17", "18", "19", "20")
EVAL_RESERVE_S = 170  # compare_models + probes on ~9 models, then packing


class Clock:
    def __init__(self, deadline: float):
        self.start, self.deadline = time.time(), deadline

    def now(self) -> float:
        return time.time() - self.start

    def left(self) -> float:
        return self.deadline - self.now()

    def log(self, message: str) -> None:
        print(f"[{self.now():6.1f} s] {message}", flush=True)


def sh(command: str, env: dict | None = None) -> None:
    subprocess.run(command, shell=True, check=True, env=env)


def set_up(work: Path, smoke: bool) -> dict:
    data = work / "data"
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="2")
    if smoke:  # this machine already has SimpleITK and the data beside the checkout
        env["SEGLOSSBRAIN_DATA"] = str(ROOT.parent / "shared" / "data")
    else:
        (work / "site-packages").mkdir(parents=True, exist_ok=True)
        sh(f"tar xJf {CARRY}/sitk.tar.xz -C {work}/site-packages")
        sh(f"tar xJf {CARRY}/maps.tar.xz -C {work}")  # -> data/synthseg_label_maps/*.nii
        sh(f"ls {data}/synthseg_label_maps/*.nii | xargs -P 16 -n 1 gzip -1")
        shutil.copytree(CARRY / "data" / "real_dev", data / "real_dev")
        env["SEGLOSSBRAIN_DATA"] = str(data)
    paths = [str(work / "site-packages"), str(ROOT / "SegLossBrain"), str(ROOT / "bench" / "experiments")]
    env["PYTHONPATH"] = os.pathsep.join(paths + [env.get("PYTHONPATH", "")])
    env["SEGLOSSBRAIN_MODEL_STORE"] = str(work / "store")
    return env


def real(env: dict, scan: str) -> str:
    folder = Path(env["SEGLOSSBRAIN_DATA"]) / "real_dev"
    return ",".join(str(folder / f) for f in SCANS[scan])


def start_run(name: str, spec, runs: Path, env: dict, device: str, smoke: bool) -> subprocess.Popen:
    scans, fraction, steps, seed = spec
    held_out = [s for s in SCANS if s not in scans] or ["vxm"]  # both trained on: vxm only reported
    command = [sys.executable, "-m", "SegLossBrainLib.cli", "train", "--run-dir", str(runs / name),
               "--init-weights", BASE, "--labelled-fraction", str(fraction), "--freeze-batchnorm",
               "--lr", "1e-4", "--lr-schedule", "poly", "--warmup-steps", "60", "--input-noise-std", "0",
               "--patch-size", "32" if smoke else "96", "--precision", "bf16", "--steps", str(3 if smoke else steps),
               "--seed", str(seed), "--checkpoint-every", "200", "--validate-every", str(max(steps // 3, 1)),
               "--threads", "2", "--device", device, "--real", real(env, held_out[0])]
    for scan in scans:
        command += ["--labelled-scan", real(env, scan)]
    return subprocess.Popen(command, env=env, cwd=ROOT, stdout=open(runs / f"{name}.log", "w"),
                            stderr=subprocess.STDOUT)


def last_step(runs: Path, name: str) -> tuple[int, float]:
    log = runs / name / "log.jsonl"
    if not log.is_file():
        return 0, 0.0
    import json
    steps = [json.loads(line) for line in log.read_text().splitlines() if '"step"' in line and '"loss"' in line]
    return (steps[-1]["step"], steps[-1]["elapsed_s"]) if steps else (0, 0.0)


def wait_runs(procs: dict, clock: Clock, until: float, runs: Path) -> dict:
    """Wait for the runs until ``until`` seconds into the call; kill those still running. Returns rc per run."""
    while any(p.poll() is None for p in procs.values()) and clock.now() < until:
        time.sleep(5)
    status = {}
    for name, proc in procs.items():
        if proc.poll() is None:
            proc.kill()
            step, elapsed = last_step(runs, name)
            clock.log(f"{name}: killed at the deadline, step {step} after {elapsed:.0f} s")
            status[name] = "killed"
        else:
            status[name] = "finished" if proc.returncode == 0 else f"failed rc {proc.returncode}"
            step, elapsed = last_step(runs, name)
            clock.log(f"{name}: {status[name]}, step {step}, {elapsed:.0f} s of training")
    return status


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--deadline", type=float, default=540, help="seconds from start to the packed results")
    parser.add_argument("--smoke", action="store_true", help="tiny settings on the CPU: checks the plumbing only")
    args = parser.parse_args()
    clock = Clock(args.deadline)
    out = Path(args.out)
    work = Path("/tmp/s7work") if not args.smoke else out / "work"
    runs = work / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    device = "cpu" if args.smoke else "cuda"
    env = set_up(work, args.smoke)
    sh(f"{sys.executable} -c 'import torch, SimpleITK; print(torch.__version__, torch.cuda.is_available(), "
       f"torch.cuda.get_device_name() if torch.cuda.is_available() else \"cpu\", SimpleITK.Version())'", env)
    clock.log("set up")

    # 1 + 2: the site on the CPUs, wave 1 on the GPU
    site = work / "site"
    site_maps = SITE_MAPS[:2] if args.smoke else SITE_MAPS
    site_env = dict(env, OMP_NUM_THREADS="1")
    site_procs = [subprocess.Popen([sys.executable, "bench/experiments/synthetic_site.py", "--out", str(site),
                                    "--maps", m], env=site_env, cwd=ROOT, stdout=open(work / f"site_{m}.log", "w"),
                                   stderr=subprocess.STDOUT) for m in site_maps]
    wave1 = {name: start_run(name, spec, runs, env, device, args.smoke) for name, spec in WAVE1.items()}
    status = wait_runs(wave1, clock, args.deadline - EVAL_RESERVE_S - 100, runs)
    for proc in site_procs:
        proc.wait()
    clock.log("site rendered: " + ", ".join(sorted(p.name for p in site.glob("*_image.nii.gz"))))
    rate = sum(last_step(runs, n)[0] / max(last_step(runs, n)[1], 1e-6) for n in WAVE1)  # steps/s, 3 at once

    # 3: issue 13's defaults, alone on the GPU
    minutes = min(8.0, max(1.0, (clock.left() - EVAL_RESERVE_S - 60) / 60))
    ft = [sys.executable, "bench/experiments/finetune_site.py", "--site", str(site), "--threads", "8",
          "--device", device, "--out", str(runs / "ft_gpu_defaults.json")]
    if args.smoke:
        ft += ["--train", "01", "--validation", "02", "--test", "02", "--set", "steps=2", "--set", "patch_size=32"]
    else:
        ft += ["--train", "01", "02", "03", "--validation", "04", "--test", *SITE_MAPS[4:]]
    if minutes < 8.0:
        ft += ["--set", f"max_minutes={minutes:.2f}"]
        clock.log(f"fine-tuning budget capped at {minutes:.2f} min by the call's deadline")
    with open(runs / "ft_gpu_defaults.log", "w") as handle:
        started = clock.now()
        try:
            rc = subprocess.run(ft, env=env, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT,
                                timeout=max(30, clock.left() - EVAL_RESERVE_S)).returncode
        except subprocess.TimeoutExpired:
            rc = "killed at the deadline"
    clock.log(f"issue 13 fine-tune + scoring: rc {rc}, {clock.now() - started:.0f} s")

    # 4: wave 2, sized from wave 1's speed (steps/s of 3 runs together, shared by 4)
    seconds = clock.left() - EVAL_RESERVE_S - 20
    per_run = rate / 4 * seconds * 0.85
    clock.log(f"wave 1 ran {rate:.2f} steps/s together; wave 2 affords about {per_run:.0f} steps per run")
    wave2 = {}
    for name, (scans, fraction, steps, seed) in WAVE2.items():
        if args.smoke or per_run >= 1200:
            steps = min(steps, int(per_run // 100 * 100)) if not args.smoke else steps
            wave2[name] = start_run(name, (scans, fraction, steps, seed), runs, env, device, args.smoke)
    if wave2:
        status.update(wait_runs(wave2, clock, args.deadline - EVAL_RESERVE_S, runs))

    # 5: judge every finished run
    finished = [n for n, s in status.items() if s == "finished" and (runs / n / "latest.safetensors").is_file()]
    models = [BASE, SHIPPED] + [str(runs / n / "latest.safetensors") for n in finished]
    draws = "1" if args.smoke else "12"
    judges = [subprocess.Popen([sys.executable, "bench/experiments/compare_models.py", *models, "--draws", draws,
                                "--device", device, "--threads", "6"], env=env, cwd=ROOT,
                               stdout=open(runs / "compare_models.log", "w"), stderr=subprocess.STDOUT),
              subprocess.Popen([sys.executable, "bench/experiments/robustness_probes.py", *models, "--device", device,
                                "--threads", "6", "--csv", str(runs / "probes.csv")], env=env, cwd=ROOT,
                               stdout=open(runs / "probes.log", "w"), stderr=subprocess.STDOUT)]
    for judge in judges:
        try:
            judge.wait(timeout=max(5, clock.left() - 15))
        except subprocess.TimeoutExpired:
            judge.kill()
            clock.log(f"{judge.args[1]}: killed at the deadline")
    clock.log("judged: " + ", ".join(finished))

    out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out / "results.tar.gz", "w:gz") as tar:
        for path in sorted(runs.rglob("*")):
            if path.is_file() and path.suffix not in (".pt", ".safetensors") and "store" not in path.parts:
                tar.add(path, arcname=str(path.relative_to(runs)))
    for name in KEEP:
        if name in finished:
            shutil.copy(runs / name / "latest.safetensors", out / f"{name}.safetensors")
    clock.log("packed")


if __name__ == "__main__":
    main()
