"""Do all 19 structures survive on the loss study's grid? Voxels per structure in the held-out synthetic images
(the study's fixed validation draw) and in the real dev scans' aseg on the study grid, fewest first.

    python bench/experiments/study_scale_check.py --grid-spacing 3 --draws 2
"""
from __future__ import annotations

import argparse

from SegLossBrainLib import paths
from SegLossBrainLib.labels import load_label_table
from SegLossBrainLib.study.scale import missing, smallest, structure_voxels
from SegLossBrainLib.study.settings import StudySettings


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid-spacing", type=float, default=3.0)
    parser.add_argument("--draws", type=int, default=2, help="held-out images per held-out map")
    args = parser.parse_args(argv)
    data = paths.data_dir()
    training, held_out = paths.split_held_out(sorted((data / paths.LABEL_MAPS).glob("*.nii*")))
    real = [(str(data / paths.REAL_DEV / i), str(data / paths.REAL_DEV / a), n) for n, i, a in paths.REAL_DEV_SCANS]
    settings = StudySettings(steps=1, label_maps=training[:1], validation_maps=held_out, real_pairs=real,
                             grid_spacing=args.grid_spacing, validation_draws=args.draws)
    table = load_label_table()
    counts = structure_voxels(settings, table)
    cases = [("synthetic", c) for c in counts["synthetic"]] + [("real", c) for c in counts["real"]]
    print(f"grid {args.grid_spacing:g} mm, held-out grid {'x'.join(map(str, settings.validation_size))}; voxels per "
          "structure, structures by their fewest voxels in the held-out images")
    print("| structure | " + " | ".join(c for _, c in cases) + " |")
    print("|---|" + "---|" * len(cases))
    names = sorted(table.names[1:], key=lambda n: min(counts["synthetic"][c][n] for c in counts["synthetic"]))
    for name in names:
        print(f"| {name} | " + " | ".join(str(counts[s][c][name]) for s, c in cases) + " |")
    scored = {table.names[i] for i in table.scored_indices}
    print(f"smallest, held-out synthetic: {smallest(counts['synthetic'])}; real (17 scored): "
          f"{smallest(counts['real'], scored)}")
    print(f"missing somewhere: synthetic {missing(counts['synthetic']) or 'none'}, real (17 scored) "
          f"{missing(counts['real'], scored) or 'none'}")


if __name__ == "__main__":
    main()
