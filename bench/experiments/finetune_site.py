"""Does fine-tuning on a few of a site's cases lift the site's OTHER scans? (issue 13), paired, per structure.

    python bench/experiments/finetune_site.py --train A_img,A_lab B_img,B_lab ... --validation V_img,V_lab \
        --test T_img,T_lab ... --out result.json [--set loss=wce --set learning_rate=1e-4 ...]
    python bench/experiments/finetune_site.py --site /tmp/site --train 01,02,03 --validation 04 \
        --test 15,16,17,18,19,20 --out result.json          # a site made by synthetic_site.py

Runs ``finetuning.finetune`` exactly as the CLI and the panel do (a throw-away model store), with the defaults
unless ``--set name=value`` overrides a ``FinetuneConfig`` field (values read as JSON where they parse). Then
the base model and the new version segment every test scan through the whole inference path, and Dice over the
17 scored structures is computed on each scan's own grid: the per-scan differences are paired. The base model's
scores are cached beside ``--out`` (keyed by the base model's sha256 and the test files).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from SegLossBrainLib.evaluation.metrics import dice_per_label
from SegLossBrainLib.finetuning.finetune import FinetuneConfig, finetune
from SegLossBrainLib.inference.segment import segment
from SegLossBrainLib.labels import load_label_table
from SegLossBrainLib.models.files import sha256_of
from SegLossBrainLib.models.store import resolve_model


def cases(items: list[str], site: str | None) -> list[tuple[str, str]]:
    if site:
        return [(f"{site}/site_{n}_image.nii.gz", f"{site}/site_{n}_labels.nii.gz") for n in items]
    return [tuple(item.split(",")) for item in items]


def dice_scan(model, image_path: str, labels_path: str, table, device: str = "cpu") -> np.ndarray:
    image = sitk.ReadImage(image_path)
    reference = sitk.GetArrayFromImage(sitk.ReadImage(labels_path)).astype(np.int64)
    reference = table.to_index_labels(reference)[0]
    labels = sitk.GetArrayFromImage(segment(image, model=model, device=device).labels)
    return dice_per_label(labels, reference, table.num_classes)


def base_scores(base: Path, tests, table, cache: Path, device: str) -> np.ndarray:
    key = sha256_of(base) + "|" + "|".join(i for i, _ in tests)
    stored = json.loads(cache.read_text()) if cache.is_file() else {}
    if key not in stored:
        stored[key] = [dice_scan(str(base), i, l, table, device).tolist() for i, l in tests]
        cache.write_text(json.dumps(stored))
    return np.array(stored[key], dtype=np.float64)


def blend(base: Path, tuned: Path, alpha: float, out: Path) -> Path:
    """WiSE-FT (Wortsman et al. 2022): the weights base + alpha * (tuned - base), saved as a model file."""
    from SegLossBrainLib.finetuning.run import blend_toward_base
    from SegLossBrainLib.models.files import load_model, save_model

    network, meta = load_model(tuned)
    blend_toward_base(network, base, alpha)
    return save_model(network, out, {k: v for k, v in meta.items() if k != "sha256"}, overwrite=True)


def parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", help="folder written by synthetic_site.py: cases are then map numbers")
    parser.add_argument("--train", nargs="+", required=True)
    parser.add_argument("--validation", help="one case; default: the fine-tuning defaults decide")
    parser.add_argument("--test", nargs="+", required=True)
    parser.add_argument("--base", default=None, help="model name or file (default: the active model)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    parser.add_argument("--out", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="where the test scans are segmented (fine-tuning: --set device=...)")
    parser.add_argument("--blend", default="", help="also score WiSE-FT blends base + a (tuned - base), e.g. 0.5,0.75")
    parser.add_argument("--keep", help="folder to copy the fine-tuned model into")
    args = parser.parse_args()

    import torch
    torch.set_num_threads(args.threads)
    table = load_label_table()
    overrides = {k: parse_value(v) for k, v in (s.split("=", 1) for s in args.set)}
    if "patch_size" in overrides and isinstance(overrides["patch_size"], int):
        overrides["patch_size"] = (overrides["patch_size"],) * 3
    train, tests = cases(args.train, args.site), cases(args.test, args.site)
    validation = cases([args.validation], args.site)[0] if args.validation else None
    base = resolve_model(args.base)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    before = base_scores(base, tests, table, out.parent / "base_scores.json", args.device)

    events = []
    with tempfile.TemporaryDirectory() as store:
        os.environ["SEGLOSSBRAIN_MODEL_STORE"] = store
        config = FinetuneConfig(pairs=[list(p) for p in train], name="site-finetune", base=str(base),
                                validation=list(validation) if validation else None, **overrides)
        started = time.perf_counter()
        def on_event(event: dict) -> None:
            if event.get("event") != "step":
                events.append(event)
            if event.get("event") == "log" or (event.get("event") == "step" and event["step"] % 10 == 0):
                print(json.dumps({k: v for k, v in event.items() if k in ("step", "elapsed_s", "eta_s", "message")}),
                      flush=True)
            elif event.get("event") == "validation":
                print(f"validation at step {event['step']}: {event.get('mean')}", flush=True)

        result = finetune(config, on_event=on_event)
        seconds = time.perf_counter() - started
        after = np.array([dice_scan(str(result.path), i, l, table, args.device) for i, l in tests]) if result.path else before
        blends = {}
        for alpha in [float(a) for a in args.blend.split(",") if a] if result.path else []:
            blended = blend(base, result.path, alpha, Path(store) / f"blend_{alpha}.safetensors")
            scores = np.array([dice_scan(str(blended), i, l, table, args.device) for i, l in tests])
            gain = np.nanmean(scores[:, table.scored_indices], 1) - np.nanmean(before[:, table.scored_indices], 1)
            blends[alpha] = {"diff_points": round(100 * float(gain.mean()), 2),
                             "per_scan_points": [round(100 * float(g), 2) for g in gain],
                             "per_structure_after": {table.names[i]: round(float(np.nanmean(scores[:, i])), 4)
                                                     for i in table.scored_indices}}
        if args.keep and result.path:
            import shutil
            Path(args.keep).mkdir(parents=True, exist_ok=True)
            for path in (result.path, result.path.with_suffix(".json")):
                shutil.copy2(path, Path(args.keep) / path.name)

    scored = table.scored_indices
    mean_before, mean_after = np.nanmean(before[:, scored], 1), np.nanmean(after[:, scored], 1)
    diff = mean_after - mean_before
    per_structure = {table.names[i]: [round(float(np.nanmean(before[:, i])), 4), round(float(np.nanmean(after[:, i])), 4)]
                     for i in scored}
    summary = {
        "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in overrides.items()},
        "status": result.status, "best_step": result.best_step, "steps_run": result.steps_run,
        "finetune_s": round(seconds, 1), "base": base.name,
        "validation_before": result.before["mean"], "validation_after": (result.after or {}).get("mean"),
        "test_before": round(float(mean_before.mean()), 4), "test_after": round(float(mean_after.mean()), 4),
        "diff_points": round(100 * float(diff.mean()), 2),
        "diff_se_points": round(100 * float(diff.std(ddof=1) / np.sqrt(len(diff))), 2) if len(diff) > 1 else None,
        "scans_better": int((diff > 0).sum()), "scans": len(diff),
        "per_scan_before_after": [[round(float(b), 4), round(float(a), 4)] for b, a in zip(mean_before, mean_after)],
        "per_structure_before_after": per_structure,
        "validations": [{"step": e.get("step"), "mean": e.get("mean")} for e in events if e.get("event") == "validation"],
        "blends": blends,
    }
    out.write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: v for k, v in summary.items() if k not in ("per_structure_before_after", "blends")}, indent=None))
    for alpha, row in blends.items():
        print(f"blend {alpha}: {row['diff_points']:+.2f} points, per scan {row['per_scan_points']}")
    worst = sorted(per_structure.items(), key=lambda kv: kv[1][1] - kv[1][0])[:4]
    print("largest losses:", ", ".join(f"{n} {100 * (a - b):+.1f}" for n, (b, a) in worst))


if __name__ == "__main__":
    main()
