"""How the recipe's ensemble is chosen, compared on validation only: each zero-config run's members
kept their heads' validation logits (RUN/members/<name>/candidates.npz); the validation rows are cut
into two stratified halves, temperatures and weights are chosen on one half and scored on the other
(both ways, several cuts). No test row is read.

    python benchmarks/selection.py RUN [RUN ...] [--cuts 5] [--bags 20] [--test]

Ways of choosing (the first task's weights, classification):
  greedy        Caruana et al. (2004) forward selection with replacement, strict gain in log loss
                (what the recipe does);
  bag-members   the same on random halves of the candidates, `--bags` times, the weights averaged
                (Caruana et al.'s bagged ensemble selection);
  bag-rows      the same on bootstrap samples of the selecting half's rows, weights averaged;
  best          the single candidate with the lowest log loss;
  mean-fused    every member's fused head, equal weights;
  greedy-no-crossfit  greedy without the cross-fitted members' candidates (convex, trees: issue 36),
                what the selection weighed before them;
  ...+prior     then a decision (tried at d1f2491 and reverted, BENCHMARKS.md): the mixture divided
                by the training prior (ensemble.json's counts where a run of d1f2491 recorded them; the
                selecting half's otherwise) to the power with the best macro-F1 on the selecting half.
Prints per run and overall: macro-F1 and log loss on the other half, and how many candidates get weight.
`--test` also prints, per run, the recorded ensemble's test macro-F1 recomputed from the members' (or
their refits') test logits, by plain argmax and, for a run of d1f2491 that recorded a decision, as it
decided: what the decision, fixed on validation, changed on test.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, mean_sd  # noqa: E402

from mmfit.evaluation.metrics import task_metrics  # noqa: E402
from mmfit.models.ensemble import EPS, fit_temperature, to_scores  # noqa: E402
from mmfit.recipe.selection import ensemble_selection  # noqa: E402
from mmfit.run.layout import CANDIDATES, MEMBERS  # noqa: E402
from mmfit.run.store import Run  # noqa: E402


PRIOR_POWERS = (0.0, 0.25, 0.5, 0.75, 1.0)


def prior_shift(counts, power: float) -> np.ndarray:
    """Post-hoc logit adjustment (Menon et al., 2021): -power * log(prior), counts smoothed by one."""
    counts = np.asarray(counts, np.float64) + 1.0
    return (-power * np.log(counts / counts.sum())).astype(np.float32)


def shifted(scores: torch.Tensor, shift) -> torch.Tensor:
    """Class probabilities with a logit shift applied, renormalised."""
    return torch.softmax(torch.log(scores.clamp(min=EPS)) + torch.as_tensor(shift, dtype=scores.dtype), -1)


def candidates(run: Path) -> tuple[dict, np.ndarray, str, object]:
    """The members' (not their refits') validation logits of the first task -> ({(member, head): logits}, y,
    task, the training rows' class counts where ensemble.json records them)."""
    spec = Run(run).ensemble()
    task = spec["primary"]
    assert spec["kinds"][task] == "classification", "classification only"
    cands, y, read = {}, None, {}
    for k in spec["validation"][task]:
        member, head = k.split("/", 1)
        if member not in read:
            read[member] = Run(run / MEMBERS / member).read_arrays(CANDIDATES)
        arrays = read[member]
        mask = arrays[f"mask/val/{task}"]
        y = arrays[f"y/val/{task}"][mask].astype(int)
        cands[(member, head)] = arrays[f"logits/val/{task}/{head}"][mask]
    return cands, y, task, ((spec.get("decision") or {}).get(task) or {}).get("train_counts")


def log_loss(p: np.ndarray, y: np.ndarray) -> float:
    return float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-7, 1)).mean())


def halves(y: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
    a = []
    for c in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == c))
        a.extend(rows[: (len(rows) + rng.integers(2)) // 2])
    a = np.sort(np.array(a, int))
    return a, np.setdiff1d(np.arange(len(y)), a)


def bagged(probs: dict, judge, bags: int, seed: int, share: float = 0.5) -> dict:
    """Caruana et al. (2004)'s bagged selection: greedy on random subsets of the candidates (each
    kept with probability `share`, at least two), the weights averaged."""
    names, rng = sorted(probs), np.random.default_rng(seed)
    total = {n: 0.0 for n in names}
    for _ in range(bags):
        keep = [n for n in names if rng.random() < share]
        if len(keep) < 2:
            keep = [names[i] for i in rng.choice(len(names), 2, replace=False)]
        for n, w in ensemble_selection({n: probs[n] for n in keep}, judge).items():
            total[n] += w / bags
    return total


def choose(way: str, probs: dict, y: np.ndarray, bags: int, seed: int) -> dict:
    def judge_on(rows):
        return lambda v: -log_loss(v[rows], y[rows])

    everything = np.arange(len(y))
    if way == "greedy":
        return ensemble_selection(probs, judge_on(everything))
    if way == "bag-members":
        return bagged(probs, judge_on(everything), bags, seed)
    if way == "bag-rows":
        rng = np.random.default_rng(seed)
        total = {k: 0.0 for k in probs}
        for _ in range(bags):
            w = ensemble_selection(probs, judge_on(rng.integers(0, len(y), len(y))))
            total = {k: total[k] + w[k] / bags for k in total}
        return total
    if way == "best":
        best = min(probs, key=lambda k: log_loss(probs[k], y))
        return {k: float(k == best) for k in probs}
    if way == "greedy-no-crossfit":
        kept = {k: v for k, v in probs.items() if k[0].split("-")[0] not in ("convex", "trees")}
        w = ensemble_selection(kept, judge_on(everything))
        return {k: w.get(k, 0.0) for k in probs}
    if way == "mean-fused":
        fused = [k for k in probs if k[1] == "fused"]
        return {k: (1 / len(fused) if k in fused else 0.0) for k in probs}
    raise ValueError(way)


WAYS = ["greedy", "greedy-no-crossfit", "bag-members", "bag-rows", "best", "mean-fused", "greedy+prior",
        "bag-rows+prior"]


def decided(mix_sel: np.ndarray, y_sel: np.ndarray, counts, classes) -> np.ndarray:
    """The decision tried at d1f2491: the prior power with the best macro-F1 on the
    selecting rows, the smaller on a tie -> the logit shift."""
    table = {p: task_metrics("classification", y_sel, shifted(torch.from_numpy(mix_sel), prior_shift(counts, p)).numpy(),
                             classes)["macro_f1"] for p in PRIOR_POWERS}
    return prior_shift(counts, max(PRIOR_POWERS, key=lambda p: (table[p], -p)))


def test_with_and_without_decision(run: Path) -> tuple[float, float, float]:
    """-> (the recorded ensemble's test macro-F1 recomputed from candidates.npz, the same with prior
    power 0, the prior power recorded)."""
    spec = Run(run).ensemble()
    task = spec["primary"]
    total, y, mask = 0.0, None, None
    for w in spec["weights"][task]:
        arrays = Run(run / spec["members"][w["member"]]).read_arrays(CANDIDATES)
        y, mask = arrays[f"y/test/{task}"], arrays[f"mask/test/{task}"]
        logits = torch.from_numpy(arrays[f"logits/test/{task}/{w['head']}"])
        total = total + w["weight"] * to_scores(logits, "classification", w["temperature"]).numpy()
    d = (spec.get("decision") or {}).get(task)
    classes = list(range(total.shape[1]))
    plain = task_metrics("classification", y[mask].astype(int), total[mask], classes)["macro_f1"]
    if not d:
        return plain, plain, 0.0
    decided_ = shifted(torch.from_numpy(total), d["shift"]).numpy()
    return (task_metrics("classification", y[mask].astype(int), decided_[mask], classes)["macro_f1"], plain,
            d["prior_power"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", type=Path, nargs="+")
    ap.add_argument("--cuts", type=int, default=5)
    ap.add_argument("--bags", type=int, default=20)
    ap.add_argument("--test", action="store_true")
    args = ap.parse_args()
    console = Console(width=200)
    table = Table("run", "rows", "candidates", *[f"{w}\nF1 / loss / used" for w in WAYS])
    overall = {w: [] for w in WAYS}
    for run in args.runs:
        cands, y, _, counts = candidates(run)
        classes = list(range(int(max(y.max() + 1, *(v.shape[1] for v in cands.values())))))
        per = {w: [] for w in WAYS}
        for cut in range(args.cuts):
            a, b = halves(y, np.random.default_rng(cut))
            for sel, held in ((a, b), (b, a)):
                temps = {k: fit_temperature(v[sel], y[sel], "classification") for k, v in cands.items()}
                probs = {k: to_scores(torch.from_numpy(v), "classification", temps[k]).numpy() for k, v in cands.items()}
                for way in WAYS:
                    w = choose(way.split("+")[0], {k: p[sel] for k, p in probs.items()}, y[sel], args.bags, cut)
                    mix = sum(share * probs[k] for k, share in w.items() if share > 0)
                    if way.endswith("+prior"):
                        prior = counts if counts is not None else np.bincount(y[sel], minlength=len(classes))
                        mix = shifted(torch.from_numpy(mix), decided(mix[sel], y[sel], prior, classes)).numpy()
                    mix = mix[held]
                    f1 = task_metrics("classification", y[held], mix, classes)["macro_f1"]
                    per[way].append((f1, log_loss(mix, y[held]), sum(v > 0 for v in w.values())))
        cells = []
        for way in WAYS:
            f1, loss, used = np.array(per[way]).T
            overall[way].append(f1.mean())
            cells.append(f"{f1.mean():.4f} / {loss.mean():.3f} / {used.mean():.1f}")
        table.add_row(run.name, str(len(y)), str(len(cands)), *cells)
    console.print(table)
    base = np.array(overall["greedy"])
    for way in WAYS[1:]:
        d = 100 * (np.array(overall[way]) - base)
        console.print(f"{way} - greedy, held-out-half macro-F1 points per run: {mean_sd(d, signed=True)} "
                      f"({', '.join(f'{x:+.2f}' for x in d)})")
    if args.test:
        diffs = []
        for run in args.runs:
            got, plain, power = test_with_and_without_decision(run)
            recorded = Run(run).evaluation("test")["metrics"][Run(run).ensemble()["primary"]]
            diffs.append(100 * (got - plain))
            console.print(f"{run.name}: test macro-F1 {got:.4f} as decided (prior power {power:g}; recorded "
                          f"{recorded['macro_f1']:.4f}), {plain:.4f} by plain argmax: {diffs[-1]:+.2f} points")
        console.print(f"the decision on test: {mean_sd(diffs, signed=True)} points")
    console.print(f"machine: {machine()}")


if __name__ == "__main__":
    main()
