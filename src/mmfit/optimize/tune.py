"""`mmfit tune cfg.yaml`: hyperparameter search over dotted config keys with Optuna.

The search space lives in the config (`tune.space`); each trial is an ordinary `train()` run in
`<study>/trials/trial-NNNN` whose monitored validation value is reported after every epoch, so
the median or hyperband pruner can stop a bad trial early. The study is stored in SQLite in the
study directory unless `storage` names another Optuna storage URL: workers on other machines
that point at the same URL and study name share the trials. `workers=K` starts K-1 more local
processes. Output: `best.yaml` (ready for `mmfit train`), `trials.csv`, `history.png`,
`importance.png`, `tune.json`.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path
from typing import Any, Optional, Union

from mmfit.config import Config, ConfigError, SearchParam, apply_overrides, load_config, read_config_file
from mmfit.evaluation.metrics import monitor_key
from mmfit.run.layout import BEST_CONFIG, SEARCH, SUMMARY, TRIALS_TABLE
from mmfit.run.store import Run, Study, new_folder


def _optuna():
    try:
        import optuna
    except ImportError:
        raise ImportError("mmfit tune needs optuna: pip install 'mmfit[tune]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def grid_values(key: str, p: SearchParam) -> list:
    """The values a grid search tries for one parameter."""
    if p.choices:
        return list(p.choices)
    if p.step is None:
        raise ConfigError(f"tune.space.{key}: grid search needs `choices` or a `step` for a {p.type} range")
    vals, v = [], p.low
    while v <= p.high + 1e-12:
        vals.append(int(round(v)) if p.type == "int" else round(v, 12))
        v += p.step
    return vals


def suggest(trial, key: str, p: SearchParam) -> Any:
    if p.choices or p.type == "categorical":
        return trial.suggest_categorical(key, list(p.choices))
    if p.type == "int":
        return trial.suggest_int(key, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
    return trial.suggest_float(key, float(p.low), float(p.high), step=p.step, log=p.log)


def make_sampler(cfg: Config):
    optuna = _optuna()
    t = cfg.tune
    if t.sampler == "grid":
        space = {k: grid_values(k, p) for k, p in t.space.items()}
        return optuna.samplers.GridSampler(space, seed=t.seed)  # the same seed in every worker
    if t.sampler == "random":
        return optuna.samplers.RandomSampler(seed=t.seed)
    return optuna.samplers.TPESampler(seed=t.seed, n_startup_trials=max(1, t.startup_trials))


def make_pruner(cfg: Config):
    optuna = _optuna()
    t = cfg.tune
    if t.pruner == "none":
        return optuna.pruners.NopPruner()
    if t.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(1, t.warmup_epochs), max_resource=cfg.train.epochs)
    return optuna.pruners.MedianPruner(n_startup_trials=t.startup_trials, n_warmup_steps=t.warmup_epochs)


def check_space(raw: dict, cfg: Config) -> None:
    """Every searched key must be a config key that takes the values searched."""
    for key, p in cfg.tune.space.items():
        for v in (grid_values(key, p) if p.choices or p.step else [p.low, p.high]):
            try:
                load_config(apply_overrides(json.loads(json.dumps(raw)), [f"{key}={json.dumps(v)}"]))
            except ConfigError as e:
                raise ConfigError(f"tune.space.{key} = {v!r}: {e}") from None


def trial_config(raw: dict, params: dict, out: Path, number: int) -> dict:
    raw = apply_overrides(json.loads(json.dumps(raw)), [f"{k}={json.dumps(v)}" for k, v in params.items()])
    raw.setdefault("train", {})
    run = Study(out).trial_dir(number)
    raw["train"]["output_dir"], raw["train"]["run_name"] = str(run.parent), run.name
    return raw


def _objective(raw: dict, cfg: Config, out: Path, threads: Optional[int]):
    optuna = _optuna()
    from rich.console import Console

    from mmfit.training.loop import train

    quiet = Console(quiet=True)

    def objective(trial):
        params = {k: suggest(trial, k, p) for k, p in cfg.tune.space.items()}
        tcfg = load_config(trial_config(raw, params, out, trial.number))
        if threads:
            tcfg.train.num_threads = threads
        run_dir = Study(out).trial_dir(trial.number)
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        epochs = []

        def report(epoch: int, value: float) -> None:
            epochs.append(epoch)
            trial.set_user_attr("epochs", len(epochs))
            trial.report(value, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after {len(epochs)} epoch(s): {value:.4f}")

        train(tcfg, run_dir=run_dir, console=quiet, on_epoch=report)
        return float(Run(run_dir).history()[-1]["best"])

    return objective


def _study(cfg: Config, storage: str, name: str, direction: Optional[str] = None):
    """Create (or join) the study with `direction`; without one, open the existing study."""
    optuna = _optuna()
    if direction is None:
        return optuna.load_study(study_name=name, storage=storage, sampler=make_sampler(cfg),
                                 pruner=make_pruner(cfg))
    return optuna.create_study(study_name=name, storage=storage, direction=direction, sampler=make_sampler(cfg),
                               pruner=make_pruner(cfg), load_if_exists=True)


def _budget(cfg: Config, trials: int) -> int:
    if cfg.tune.sampler == "grid":
        n = 1
        for k, p in cfg.tune.space.items():
            n *= len(grid_values(k, p))
        return min(trials, n)
    return trials


def plan(study, cfg: Config, trials: int) -> int:
    """Enqueue the study's budget: trials numbered 0..trials-1 exist (waiting, running or finished)
    once this returns; -> how many it added. A grid's points are enqueued as fixed parameters (in the
    sampler's seeded order when the budget is smaller than the grid); other samplers' trials are
    enqueued empty and sampled when a worker starts them, so TPE still learns from the finished ones."""
    import itertools
    import random

    taken = [t for t in study.get_trials(deepcopy=False) if t.number < trials]
    need = trials - len(taken)
    if need <= 0:
        return 0
    if cfg.tune.sampler != "grid":
        for _ in range(need):
            study.enqueue_trial({})
        return need
    keys = list(cfg.tune.space)
    points = [dict(zip(keys, vals)) for vals in itertools.product(*(grid_values(k, cfg.tune.space[k]) for k in keys))]
    random.Random(cfg.tune.seed).shuffle(points)
    seen = [t.params or t.system_attrs.get("fixed_params", {}) for t in taken]
    fresh = [q for q in points if q not in seen][:need]
    for params in fresh:
        study.enqueue_trial(params)
    return len(fresh)


@contextlib.contextmanager
def _claim_lock(storage: str):
    """Around setting a waiting trial running. Optuna does that in one transaction with the row locked
    on PostgreSQL and MySQL; SQLite takes no row lock, so two processes could both read the trial as
    waiting and both run it. For a SQLite storage the workers hold an exclusive lock on a file beside
    the database (they share its folder anyway)."""
    if not storage.startswith("sqlite:///"):
        yield
        return
    import fcntl

    with open(storage[len("sqlite:///"):] + ".take.lock", "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _take(study, trials: int, storage: str):
    """Start the next waiting trial of the budget (number < trials), or None when none is left.
    Trial numbers are given out by the storage and a waiting trial is set running by one worker only
    (see `_claim_lock`), so workers on any number of machines run each trial of the budget exactly once
    (optuna's MaxTrialsCallback lets racing workers start a few more)."""
    optuna = _optuna()
    TS = optuna.trial.TrialState
    for t in study.get_trials(deepcopy=False, states=(TS.WAITING,)):
        if t.number >= trials:
            continue
        try:
            with _claim_lock(storage):
                claimed = study._storage.set_trial_state_values(t._trial_id, state=TS.RUNNING)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
        if claimed:
            return optuna.trial.Trial(study, t._trial_id)
    return None


def work(raw: dict, storage: str, name: str, out: str, trials: int, threads: Optional[int], start=None) -> None:
    """One worker: runs waiting trials of the budget (see `plan`) until none is left. A trial whose
    training raises RuntimeError or ValueError is recorded as failed and the worker goes on."""
    import logging

    optuna = _optuna()
    TS = optuna.trial.TrialState
    cfg = load_config(raw)
    study = _study(cfg, storage, name)
    objective = _objective(raw, cfg, Path(out), threads)
    if start is not None:  # local workers begin together, once each has imported torch and opened the study
        start.wait(timeout=300)
    while (trial := _take(study, trials, storage)) is not None:
        try:
            value = objective(trial)
        except optuna.TrialPruned:
            study.tell(trial, state=TS.PRUNED)
        except (RuntimeError, ValueError) as e:
            logging.getLogger("mmfit.tune").warning("trial %d failed: %r", trial.number, e)
            study.tell(trial, state=TS.FAIL)
        except BaseException:
            study.tell(trial, state=TS.FAIL)
            raise
        else:
            study.tell(trial, value)


def tune(config: Union[str, Path, dict], overrides: Optional[list[str]] = None, trials: Optional[int] = None,
         storage: Optional[str] = None, study_name: Optional[str] = None, workers: int = 1,
         out: Optional[Union[str, Path]] = None, console=None, backend: str = "local",
         address: Optional[str] = None) -> dict:
    """Run (or join) a study; -> summary dict (also written to <out>/tune.json). backend="ray": the
    workers are Ray tasks across the cluster at `address` (or $RAY_ADDRESS), each taking trials from
    the same storage with the study's sampler (give a storage every machine reaches, e.g.
    postgresql://..., and an `out` folder they all see)."""
    import multiprocessing as mp

    from rich.console import Console

    _optuna()  # a clear message if optuna is missing, before any work
    console = console or Console()
    if isinstance(config, (str, Path)):
        raw = read_config_file(config)
    else:
        raw = json.loads(json.dumps(config))
    raw = apply_overrides(raw, overrides or [])
    cfg = load_config(raw)
    if not cfg.tune.space:
        raise ConfigError("tune.space: nothing to search; e.g. tune: {space: {train.lr: {type: float, low: 1e-4, "
                          "high: 1e-2, log: true}}}")
    if cfg.train.selection != "val":
        raise ConfigError("tune: trials are judged on validation, so train.selection must be val, not "
                          f"{cfg.train.selection!r}")
    check_space(raw, cfg)
    trials = _budget(cfg, trials or cfg.tune.trials)
    folder = Study(out if out else new_folder(cfg.train.output_dir, "tune"))  # an existing one: join its study
    folder.create()
    out = folder.path
    storage = storage or folder.storage()
    name = study_name or "mmfit"
    key, mode = monitor_key(cfg)
    study = _study(cfg, storage, name, "maximize" if mode == "max" else "minimize")
    if not study.trials:
        for params in cfg.tune.enqueue:
            study.enqueue_trial(params)
    plan(study, cfg, trials)
    folder.write_text(SEARCH, load_config(raw).to_yaml())
    if backend not in ("local", "ray"):
        raise ValueError(f"backend must be local or ray, not {backend!r}")
    workers = max(1, workers)
    threads = max(1, (os.cpu_count() or 1) // workers) if workers > 1 else None
    where = "Ray task" if backend == "ray" else "local worker"
    console.print(f"study '{name}' at {storage}: {trials} trials, sampler {cfg.tune.sampler}, pruner "
                  f"{cfg.tune.pruner}, {workers} {where}(s); objective {key} ({mode})")
    t0 = time.time()
    if backend == "ray":
        from mmfit.cluster.engine import RayBarrier, connect

        ray = connect(address)
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)) // workers)
        task = ray.remote(num_cpus=cpus, max_retries=0)(work)
        start = RayBarrier(ray, workers)
        ray.get([task.remote(raw, storage, name, str(out.resolve()), trials, cpus, start) for _ in range(workers)])
        return summarize(_study(cfg, storage, name), raw, cfg, out, key, time.time() - t0, console)
    procs, start = [], None
    if workers > 1:
        ctx = mp.get_context("spawn")
        start = ctx.Barrier(workers)
        procs = [ctx.Process(target=work, args=(raw, storage, name, str(out), trials, threads, start)) for _ in
                 range(workers - 1)]
        for p in procs:
            p.start()
    work(raw, storage, name, str(out), trials, threads, start)
    for p in procs:
        p.join()
    study = _study(cfg, storage, name)
    return summarize(study, raw, cfg, out, key, time.time() - t0, console)


def summarize(study, raw: dict, cfg: Config, out: Path, key: str, seconds: float, console) -> dict:
    import pandas as pd
    from rich.table import Table

    optuna = _optuna()
    TS = optuna.trial.TrialState
    ran = [t for t in study.trials if t.state != TS.WAITING]  # left waiting: over the budget, never started
    rows = []
    for t in ran:
        rows.append({"number": t.number, "state": t.state.name, "value": t.value,
                     "epochs": t.user_attrs.get("epochs"), "seconds": t.duration.total_seconds() if t.duration else None,
                     "worker": t.user_attrs.get("worker"), **{f"params.{k}": v for k, v in t.params.items()},
                     "run_dir": t.user_attrs.get("run_dir")})
    folder = Study(out)
    folder.write_text(TRIALS_TABLE, pd.DataFrame(rows).to_csv(index=False))
    done = [t for t in ran if t.state == TS.COMPLETE]
    if not done:
        raise RuntimeError(f"no trial of study {study.study_name} completed; see {out / TRIALS_TABLE}")
    best = study.best_trial
    best_raw = apply_overrides(json.loads(json.dumps(raw)), [f"{k}={json.dumps(v)}" for k, v in best.params.items()])
    best_cfg = load_config(best_raw).to_dict()
    best_cfg.pop("tune", None)
    import yaml

    folder.write_text(BEST_CONFIG, f"# best of {len(ran)} trials of study '{study.study_name}': {key} = "
                      f"{best.value:.4f} (trial {best.number}, {best.user_attrs.get('run_dir')})\n"
                      + yaml.safe_dump(best_cfg, sort_keys=False))
    plots(study, folder)
    table = Table(title=f"tune: {len(ran)} trials ({key})")
    for c in ("trial", "state", key, "epochs", *cfg.tune.space):
        table.add_column(c, justify="right")
    for t in sorted(ran, key=lambda t: t.number):
        table.add_row(str(t.number), t.state.name.lower(), "-" if t.value is None else f"{t.value:.4f}",
                      str(t.user_attrs.get("epochs", "-")),
                      *[_fmt(t.params.get(k)) for k in cfg.tune.space])
    console.print(table)
    pruned = [t for t in ran if t.state == TS.PRUNED]
    summary = {"study": study.study_name, "best_value": best.value, "best_trial": best.number,
               "best_params": best.params, "trials": len(ran), "completed": len(done),
               "pruned": len(pruned), "failed": sum(t.state == TS.FAIL for t in ran),
               "workers": len({t.user_attrs.get("worker") for t in ran}), "seconds": round(seconds, 1),
               "sampler": cfg.tune.sampler, "pruner": cfg.tune.pruner, "monitor": key, "out": str(out),
               "best_config": str(out / BEST_CONFIG)}
    folder.write_json(SUMMARY, summary)
    console.print(f"best {key} {best.value:.4f} (trial {best.number}); {len(pruned)} pruned; "
                  f"wrote {out / 'best.yaml'} (run it: mmfit train {out / 'best.yaml'}), trials.csv, history.png, "
                  "importance.png")
    return summary


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)


def plots(study, folder: Study) -> None:
    """history.png: every trial's value and the best so far; importance.png: fANOVA importances."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    optuna = _optuna()
    TS = optuna.trial.TrialState
    done = sorted([t for t in study.trials if t.state == TS.COMPLETE], key=lambda t: t.number)
    pruned = [t for t in study.trials if t.state == TS.PRUNED]
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    fig, ax = plt.subplots(figsize=(6, 3.5))
    xs, ys = [t.number for t in done], [t.value for t in done]
    ax.scatter(xs, ys, color="#2563eb", s=18, label="completed")
    if pruned:
        last = [t.intermediate_values[max(t.intermediate_values)] for t in pruned if t.intermediate_values]
        ax.scatter([t.number for t in pruned if t.intermediate_values], last, color="#9ca3af", marker="x", s=18,
                   label="pruned (last value)")
    run_best, best = [], None
    for y in ys:
        best = y if best is None else (max(best, y) if maximize else min(best, y))
        run_best.append(best)
    ax.step(xs, run_best, where="post", color="#dc2626", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel("objective")
    ax.legend(fontsize=8)
    ax.set_title("optimisation history", fontsize=10)
    fig.tight_layout()
    folder.write_figure("history.png", fig)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 0.8 + 0.4 * max(1, len(study.trials[0].params) if study.trials else 1)))
    try:
        imp = optuna.importance.get_param_importances(study) if len(done) >= 2 else {}
    except (RuntimeError, ValueError):  # e.g. a single distinct value everywhere
        imp = {}
    if imp:
        names = list(imp)[::-1]
        ax.barh(names, [imp[n] for n in names], color="#9333ea")
        ax.set_xlabel("importance (fANOVA)")
    else:
        ax.text(0.5, 0.5, "not enough completed trials for importances", ha="center", va="center")
        ax.axis("off")
    ax.set_title("parameter importance", fontsize=10)
    fig.tight_layout()
    folder.write_figure("importance.png", fig)
    plt.close(fig)
