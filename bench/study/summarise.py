"""Condensed views of a loss study's results.csv, for docs/LOSS_STUDY.md (the full report is results.md).

    python bench/study/summarise.py docs/loss_study/results.csv

Prints, per set (held-out synthetic, real) and learning rate:
  1. each arm's mean Dice of the 17 scored structures, per seed and overall, and its fall from 1e-3 to 1e-4;
  2. the same for the smallest scored structures only (the paper's claim is about them);
  3. paired differences between chosen pairs of arms (a unit is one image scored by one seed's run; only the
     units both arms have are compared).
"""
import argparse
import csv
import collections
import math

SMALL = ("inferior lateral ventricle", "3rd ventricle", "4th ventricle", "accumbens", "pallidum", "amygdala")
PAIRS = (("explog", "dice"), ("explog", "wce"), ("explog", "gdl"), ("explog", "explog_g1"),
         ("explog", "explog_g2"), ("explog", "logdice"), ("explog", "dice_ce"), ("wce", "gdl"),
         ("vnet", "dice"))


def load(path):
    """{(arm, lr, set): {(seed, case): {structure: dice}}} for the scored structures."""
    table = collections.defaultdict(lambda: collections.defaultdict(dict))
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if row["scored"] == "1":
                table[(row["arm"], float(row["lr"]), row["set"])][(row["seed"], row["case"])][row["structure"]] = (
                    float(row["dice"]))
    return table


def mean(values):
    return sum(values) / len(values)


def mean_se(values):
    m = mean(values)
    if len(values) < 2:
        return m, float("nan")
    var = sum((v - m) ** 2 for v in values) / (len(values) - 1)
    return m, math.sqrt(var / len(values))


def unit_scores(units, structures=None):
    """{unit: mean Dice over the structures (all scored ones when None)}."""
    return {u: mean([d for s, d in per.items() if structures is None or s in structures])
            for u, per in units.items()}


def arm_table(table, st, structures, title):
    arms = sorted({a for a, _, s in table if s == st}, key=lambda a: -mean(list(
        unit_scores(table.get((a, 1e-3, st), {"x": {"": 0.0}}), structures).values())))
    print(f"\n### {title}, {st}\n")
    print("| arm | lr 1e-3 (seed 0 / seed 1) | lr 1e-3 mean | lr 1e-4 (seed 0 / seed 1) | lr 1e-4 mean | 1e-4 − 1e-3 (paired ± s.e.) |")
    print("|---|---|---|---|---|---|")
    for arm in arms:
        cells, scores = [], {}
        for lr in (1e-3, 1e-4):
            units = table.get((arm, lr, st))
            if not units:
                cells += ["–", "–"]
                continue
            scores[lr] = unit_scores(units, structures)
            seeds = sorted({u[0] for u in scores[lr]})
            per_seed = [mean([v for u, v in scores[lr].items() if u[0] == s]) for s in seeds]
            cells += [" / ".join(f"{v:.3f}" for v in per_seed), f"{mean(list(scores[lr].values())):.3f}"]
        if len(scores) == 2:
            common = sorted(set(scores[1e-3]) & set(scores[1e-4]))
            m, se = mean_se([scores[1e-4][u] - scores[1e-3][u] for u in common])
            cells.append(f"{m:+.3f} ± {se:.3f}")
        else:
            cells.append("–")
        print(f"| {arm} | " + " | ".join(cells) + " |")


def pair_table(table, st, structures, title):
    print(f"\n### Paired differences, {title}, {st}\n")
    print("| pair | lr 1e-3 | lr 1e-4 |")
    print("|---|---|---|")
    for a, b in PAIRS:
        cells = []
        for lr in (1e-3, 1e-4):
            ua, ub = table.get((a, lr, st)), table.get((b, lr, st))
            if not ua or not ub:
                cells.append("–")
                continue
            sa, sb = unit_scores(ua, structures), unit_scores(ub, structures)
            diffs = [sa[u] - sb[u] for u in sorted(set(sa) & set(sb))]
            m, se = mean_se(diffs)
            cells.append(f"{m:+.3f} ± {se:.3f} ({sum(d > 0 for d in diffs)}/{len(diffs)})")
        print(f"| {a} − {b} | " + " | ".join(cells) + " |")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results_csv")
    args = parser.parse_args()
    table = load(args.results_csv)
    for st in ("synthetic", "real"):
        arm_table(table, st, None, "mean Dice of the 17")
        arm_table(table, st, SMALL, "mean Dice of the six smallest scored structures (" + ", ".join(SMALL) + ")")
        pair_table(table, st, None, "mean of the 17")
        pair_table(table, st, SMALL, "six smallest")


if __name__ == "__main__":
    main()
