"""The recipe from start to end (`run_recipe`: what `mmfit.fit` and `mmfit train MANIFEST --target COL`
run): the members planned (recipe/members.py) and trained one after another in their shares of the
time (`Members`; recipe/budget.py), the selection on validation (recipe/selection.py), the chosen
members refit on train + val where the time allows, and the ensemble run written (`ensemble.json`,
its evaluation with the ablation, its config).
"""

from __future__ import annotations

import copy
import shutil
import time
from pathlib import Path
from typing import Optional

import numpy as np

from mmfit.config import Config, ConfigError, modality_kinds
from mmfit.data.cache import FeatureCache
from mmfit.data.manifest import read_manifest
from mmfit.recipe.budget import RESERVE, fit_frozen_passes
from mmfit.recipe.members import CLOSED_FORM, extra_member, member_configs, split_keeps_groups
from mmfit.recipe.selection import (calibrate, condition_logits, ensemble_evaluation, member_logits, out_of_fold,
                                    save_candidates, select, to_member_scores)
from mmfit.run.layout import ENSEMBLE, MEMBERS, PARAMS, PREPROCESSING, SKIPPED, SKIPPED_SUMMARY
from mmfit.run.store import Run, new_folder, resolve_paths
from mmfit.tasks import task_kind
from mmfit.training.loop import trained


def run_recipe(cfg: Config, df=None, run_dir: Optional[Path] = None, console=None, roles: Optional[list] = None,
        keep_table: bool = False) -> Path:
    """Train the members within `cfg.recipe.time_limit`, select their ensemble on validation, refit
    the chosen ones on train + val where the time allows (cfg.recipe.refit), and write the ensemble
    run (its config.yaml: `cfg` with the recipe on). `keep_table`: `df` (the table made from a class
    folder) is written into the run as its manifest (RUN/manifest.csv), so that the run, like one
    from a manifest file, can be evaluated and reported on its own splits later."""
    from rich.console import Console

    t0 = time.time()
    console = console or Console()
    other = [t for t, tc in cfg.data.targets.items() if not task_kind(tc.type).per_row]
    if other:
        raise ConfigError(f"data.targets.{other[0]}: the small-data recipe combines class probabilities and "
                          "values, not embeddings or texts; train it as one model (recipe.enabled: false)")
    cfg, given = resolve_paths(cfg)
    cfg.recipe.enabled = True
    out = Run(run_dir or new_folder(cfg.train.output_dir, "fit"))
    if _holds_files(out.path):
        raise FileExistsError(f"{out} already exists and is not empty; choose another -o/--output")
    made = not out.path.exists()
    out.create()
    try:
        return _members_and_ensemble(cfg, given, out, df, roles, keep_table, console, t0)
    except BaseException:
        if made and not _holds_files(out.path):  # stopped before it wrote a file (bad rows): -o is free again
            shutil.rmtree(out.path, ignore_errors=True)
        raise


def _holds_files(path: Path) -> bool:
    """Whether a file lies anywhere under `path` (a tree of empty folders holds no run)."""
    return path.exists() and any(p.is_file() for p in path.rglob("*"))


def _members_and_ensemble(cfg: Config, given: dict, out: Run, df, roles, keep_table: bool, console,
                          t0: float) -> Path:
    rows = None if df is None else len(df)
    if keep_table and df is not None:
        cfg.data.manifest = str(out.write_manifest(df).resolve())
        df = None
    first_pass = fit_frozen_passes(cfg, lambda: rows if rows is not None else len(read_manifest(cfg.data.manifest)),
                                   console.print)
    team = Members(out, df, _conditions(cfg), cfg.recipe, t0, console, first_pass)
    team.train_all(member_configs(cfg, split_keeps_groups(cfg, df)))
    temps, scores, weights, report = team.choose()
    if cfg.recipe.refit:
        team.refit_chosen(weights)
    scores = team.with_ablation(weights, temps)
    _write(out, (cfg, given), team, (weights, temps, report), scores, roles, time.time() - t0)
    console.print(f"ensemble of {', '.join(team.runs)} in {time.time() - t0:.0f}s: {out}")
    return out.path


class Members:
    """The members as they are trained: their runs, the time each took, their candidate logits, and
    the splits they share. The time limit is shared out: the probe first (half of what the frozen
    encoders' one pass leaves, plus the pass), each other
    planned member an equal part of what is left; then, while the budget allows, more of the
    trainable kinds the selection weighs so far (`finetune-2`, `scratch-2`, ...: see extra_member;
    averaging members that differ lowers the variance a few hundred rows leave). Each member's
    candidate outputs (all modalities, val and test) are taken right after it trains, so its time
    counts in full; under the ablation conditions only for the chosen members, at the end (RESERVE)."""

    def __init__(self, out: Run, df, conditions: list, recipe, t0: float, console,
                 first_pass: float = 0.0):
        self.out, self.df, self.conditions, self.console, self.t0 = out, df, conditions, console, t0
        self.first_pass = first_pass  # the frozen encoders' one pass, expected: the probe's first epoch runs it
        self.limit = recipe.time_limit
        self.budget = None if recipe.time_limit is None else recipe.time_limit * (1 - RESERVE)
        self.plans: dict[str, Config] = {}
        self.runs: dict[str, Run] = {}
        self.took: dict[str, float] = {}
        self.logits: dict = {}
        self.from_probe: set[str] = set()  # LP-FT members: they start from the probe's weights
        self.refits: dict[str, Run] = {}  # member -> its refit on train + val
        self.not_refit: dict[str, dict] = {}  # chosen member -> why it was not refit (seconds needed, left)
        self.labelled: set[str] = set()  # members fitted on train + val already (out-of-fold val logits)
        self.refit_logits: dict = {}
        self.splits = self.pre = self.rows = None
        self.cache: Optional[FeatureCache] = None
        self.said: set[str] = set()  # the data lines the first member showed: not again for the others

    def left(self) -> float:
        return float("inf") if self.budget is None else self.budget - (time.time() - self.t0)

    def _train(self, name: str, mcfg: Config, share: Optional[float], refit_of: Optional[str] = None) -> None:
        # a share the members before used up: one epoch, as any limit already passed (a limit must be positive)
        mcfg.train.time_limit = None if share is None else max(share, 1e-3)
        what = f"refit of {refit_of} on train + val, {mcfg.train.epochs} epochs" if refit_of else ""
        self.console.rule(f"member {name}" + (f" ({what})" if what else "") + (f" (up to {share:.0f}s)" if share else ""))
        t = time.time()
        base = refit_of or name
        init = None
        if base in self.from_probe:
            init = (self.refits.get("probe") or self.runs["probe"]).path
        # a member is never resumed: no checkpoints/, its weights in model.safetensors, the frozen
        # encoders' beside the members, once for all
        session = trained(mcfg, df=self.df, run_dir=self.out / MEMBERS / name, init=init, console=self.console,
                          resumable=False, shared_frozen=self.out / MEMBERS, said=self.said)
        run, splits, pre = session.run, session.splits, session.pre
        # the ablation conditions only for members the selection weighs (with_ablation): a refit is one
        logits = condition_logits(session.model, splits, pre, self.conditions if refit_of else self.conditions[:1])
        del session
        if mcfg.model.head in ("convex", "trees") and mcfg.model.crossfit.rows == "labelled":
            logits["all"]["val"] = out_of_fold(run, splits["val"])  # its fit saw the val rows: their OOF logits
            self.labelled.add(name)
        save_candidates(run, logits, splits)
        if refit_of:
            if splits["test"].rows.tolist() != self.rows[2]:
                raise RuntimeError(f"the refit of {refit_of} holds other test rows than its member")
            self.refits[refit_of], self.refit_logits[refit_of] = run, logits
            return
        rows = [splits[s].rows.tolist() for s in ("train", "val", "test")]
        if self.rows is not None and rows != self.rows:
            raise RuntimeError(f"member {name} split the rows differently from the others")
        self.splits, self.pre, self.rows = splits, pre, rows
        self.plans[name], self.runs[name], self.logits[name] = mcfg, run, logits
        self.took[name] = time.time() - t

    def train_all(self, plans: dict[str, Config]) -> None:
        """The planned members in order, then more seeds of the trainable ones while the budget allows.
        The members fitted in closed form (CLOSED_FORM: no epochs) take what they take, and always
        run; the first that trains by epochs (the probe) gets half of what is left, and its first
        epoch pays the frozen encoders' pass where no member before it did; the others an equal part."""
        self.cache = FeatureCache(next(iter(plans.values())).data.cache_dir)
        names = list(plans)
        for i, (name, mcfg) in enumerate(plans.items()):
            share = None
            if self.budget is not None and name not in CLOSED_FORM:
                left = self.left()
                first = not any(n in self.runs for n in names[:i] if n not in CLOSED_FORM)
                pending = [n for n in names[i:] if n not in CLOSED_FORM]
                if first:  # the probe: half of what is left, and the frozen pass if it is still to come
                    paid = any(n in self.runs for n in names[:i])
                    share = (0.0 if paid else self.first_pass) + 0.5 * (left - (0.0 if paid else self.first_pass))
                else:
                    share = left / len(pending)
                if not first and share < 0.08 * self.limit:
                    self.console.print(f"{name}: not trained ({left:.0f}s of the time limit left)")
                    continue
            if name == "finetune":
                self.from_probe.add(name)
            self._train(name, mcfg, share)
        self.extras()

    def extras(self) -> None:
        """More members of the trainable kinds, while the budget allows and the selection weighs the kind."""
        again = [n for n in ("finetune", "scratch") if n in self.runs]
        for k in range(2, 8 if self.budget is not None else 1):
            for name in list(again):
                if not self._weighted(name):
                    self.console.print(f"no more {name} members: the selection gives them no weight")
                    again.remove(name)
                    continue
                if self.took[name] > self.left():  # another would not fit: no more of it
                    again.remove(name)
                    continue
                mcfg, from_probe = extra_member(name, self.plans[name], k, name in self.from_probe)
                if from_probe:
                    self.from_probe.add(f"{name}-{k}")
                self._train(f"{name}-{k}", mcfg, self.left())

    def _weighted(self, kind: str) -> bool:
        """Whether the selection, as it stands, weighs any member of this kind (`scratch`, `scratch-2`, ...)."""
        weights = self.choose()[2]
        return any(w > 0 and (k == kind or k.startswith(kind + "-"))
                   for ws in weights.values() for (k, _), w in ws.items())

    def choose(self) -> tuple[dict, dict, dict, dict]:
        """-> (temperatures, calibrated scores, weights, the candidates' validation report)."""
        temps, scores = calibrate(self.logits, self.splits, self.pre)
        weights, report = select(scores, self.splits, self.pre)
        return temps, scores, weights, report

    def _to_refit(self, weights: dict) -> list[str]:
        """The members with weight, and the probe where an LP-FT member among them starts from it;
        in the order they were trained (the probe first)."""
        chosen = _chosen(weights)
        if chosen & self.from_probe:
            chosen.add("probe")
        return [k for k in self.runs if k in chosen and k not in self.labelled]

    def refit_cost(self, name: str) -> float:
        """What training `name` again on train + val for its best epoch count would take: its own
        overhead (setup, outputs) plus that many epochs, each longer by the val rows."""
        run = self.runs[name]
        epochs = [h["time_s"] for h in run.history()]
        if not epochs:
            return 0.0
        n_train, n_val = len(self.rows[0]), len(self.rows[1])
        overhead = max(0.0, self.took[name] - sum(epochs))
        return overhead + self.refit_epochs(name) * float(np.median(epochs)) * (n_train + n_val) / n_train

    def refit_epochs(self, name: str) -> int:
        return int((self.runs[name].evaluation("val") or {}).get("best_epoch", len(self.runs[name].history()) - 1)) + 1

    def refit_chosen(self, weights: dict) -> None:
        """Each chosen member trained again on train + val with its best epoch count (AutoGluon's
        refit_full): the same config, seed and preprocessing, a quarter or so more rows. Its weight and
        temperature stay those chosen for the member; one that would overrun the time limit is left
        as it is."""
        for name in self._to_refit(weights):
            cost, left = self.refit_cost(name), self.left()
            if cost > left:
                self.console.print(f"{name}: not refit on train + val (about {cost:.0f}s needed, {left:.0f}s left)")
                self.not_refit[name] = {"needed_s": round(cost, 1), "left_s": round(left, 1)}
                continue
            mcfg = copy.deepcopy(self.plans[name])
            if mcfg.model.head == "neighbours":  # k and the temperature as validation chose them
                mcfg.model.neighbours = self.runs[name].config().model.neighbours
            mcfg.data.split.refit, mcfg.train.selection = True, "last"
            mcfg.train.epochs = self.refit_epochs(name)
            self._train(f"{name}-refit", mcfg, None if self.budget is None else left, refit_of=name)

    def with_ablation(self, weights: dict, temps: dict) -> dict:
        """The chosen members' test logits under each ablation condition too (a member without weight
        never needs them: on the demo that saved about a minute of a 10-minute limit) -> the members'
        calibrated scores, all conditions included where computed."""
        chosen = _chosen(weights)
        if len(self.conditions) > 1:
            for name in [k for k in self.runs if k in chosen and k not in self.refits]:
                extra, _, _ = member_logits(self.runs[name], self.conditions[1:], self.cache, self.console.print,
                                            self.df)
                self.logits[name].update(extra)
        return {k: to_member_scores(lg, k, temps, self.pre) for k, lg in self.logits.items()}

    def final_scores(self, temps: dict, scores: dict) -> dict:
        """Test-time scores of every member: its refit's where there is one (under its temperatures)."""
        out = dict(scores)
        for k, lg in self.refit_logits.items():
            out[k] = to_member_scores(lg, k, temps, self.pre)
        return out


def _chosen(weights: dict) -> set[str]:
    """The members the selection gives weight, in any task."""
    return {k for ws in weights.values() for (k, _), w in ws.items() if w > 0}


def _conditions(cfg: Config) -> list[tuple[str, list[str]]]:
    mods = list(modality_kinds(cfg))
    out = [("all", [])]
    if len(mods) > 1:
        out += [(f"without_{m}", [m]) for m in mods] + [(f"only_{m}", [o for o in mods if o != m]) for m in mods]
    return out


def _write(out: Run, config, team: Members, choice, scores, roles, seconds) -> None:
    (cfg, given), (weights, temps, report) = config, choice
    splits, pre, conditions = team.splits, team.pre, team.conditions
    # the members read the data alike: the ensemble reads it as the probe does, and skipped what it skipped
    out.copy_from(team.runs["probe"], PREPROCESSING + (SKIPPED, SKIPPED_SUMMARY))
    out.save_config(cfg, given)
    kinds = {t: p.type for t, p in pre.targets.items()}
    used = {k: team.refits.get(k, r) for k, r in team.runs.items()}
    spec = {"members": {k: f"{MEMBERS}/{r.name}" for k, r in used.items()}, "primary": next(iter(pre.targets)),
            "kinds": kinds,
            "weights": {t: [{"member": k, "head": h, "weight": w, "temperature": temps[t][(k, h)],
                             "trained_on": "train+val" if k in team.refits or k in team.labelled else "train"}
                            for (k, h), w in sorted(ws.items()) if w > 0] for t, ws in weights.items()},
            "validation": report, "seconds": round(seconds, 1)}
    if team.refits:
        spec["refit"] = {k: {"from": f"{MEMBERS}/{k}", "epochs": r.config().train.epochs,
                             "train_rows": len(team.rows[0]) + len(team.rows[1])} for k, r in team.refits.items()}
    if team.not_refit:  # chosen, trained on train only: the time limit left too little to train it again
        spec["not_refit"] = team.not_refit
    if roles:
        spec["roles"] = [{"column": c.column, "role": c.role, "reason": c.reason} for c in roles]
    out.write_json(ENSEMBLE, spec)
    params = {k: Run(r.path).read_json(PARAMS) or {} for k, r in used.items()}
    out.write_json(PARAMS, {"params": sum(p.get("params", 0) for p in params.values()), "members": params})
    final = team.final_scores(temps, scores)
    for split in ("val", "test"):
        if len(splits[split]):
            # validation: the members as selected (a refit member has trained on those rows)
            res = ensemble_evaluation(scores if split == "val" else final, weights, splits[split], pre, split,
                                      conditions)
            res.update(split=split, run=str(out), ensemble=spec["weights"])
            if split == "val" and team.refits:
                res["note"] = ("scored by the members before their refit on train + val "
                               f"({', '.join(team.refits)}); the ensemble itself has trained on these rows")
            out.write_evaluation(split, res)
