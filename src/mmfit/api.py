"""The Python API; the CLI is a thin table over these functions.

    import mmfit
    run = mmfit.train("cfg.yaml", df=my_dataframe)         # or a manifest named in the config
    result = mmfit.evaluate(run, split="test")
    preds = mmfit.Predictor.load(run).predict(new_df)
"""

from __future__ import annotations

import dataclasses
import io
import os
import time
from importlib import resources
from pathlib import Path
from typing import Optional, Union

import numpy as np
import pandas as pd
from rich.console import Console

from mmfit.config import Config, Overrides, encoder_config, load_config, seconds  # noqa: F401  (seconds: API)

ConfigLike = Union[str, Path, dict, Config]


def _config(config: ConfigLike, overrides: Overrides = None, need_targets: bool = True) -> Config:
    if isinstance(config, Config):
        return load_config(config.to_dict(), overrides, need_targets) if overrides else config
    return load_config(config, overrides, need_targets)


def packaged_config(name: str) -> Path:
    return Path(str(resources.files("mmfit") / "configs" / f"{name}.yaml"))


def validate(config: ConfigLike, overrides: Overrides = None, check_data: bool = True,
             console: Optional[Console] = None) -> Config:
    """Validate a config (and, if its manifest exists, that its columns are there)."""
    from mmfit.data.manifest import check_columns, read_manifest

    cfg = _config(config, overrides)
    if check_data and cfg.data.manifest and Path(cfg.data.manifest).exists():
        check_columns(read_manifest(cfg.data.manifest), cfg.data, need_targets=True)
    (console or Console()).print(f"[green]config is valid[/green]: {len(cfg.data.columns)} input column(s), "
                                 f"{len(cfg.data.targets)} target(s)")
    return cfg


def train(config: ConfigLike = None, overrides: Overrides = None, df: Optional[pd.DataFrame] = None,
          run_dir: Optional[Union[str, Path]] = None, resume: Optional[Union[str, Path]] = None,
          console: Optional[Console] = None) -> Path:
    """Train from a config (and optionally a DataFrame); returns the run directory."""
    from mmfit.training import loop

    console = console or Console()
    if resume:
        if config is not None or overrides:
            console.print(f"note: --resume continues {resume} with its own config.yaml; the config and overrides "
                          "given here are not used")
        run = loop.train(df=df, resume=Path(resume), console=console)
    else:
        if config is None:
            raise ValueError("a config is needed (or resume=RUN_DIR)")
        cfg = _config(config, overrides)
        if cfg.recipe.enabled:  # the small-data recipe on this data section (mmfit init writes such configs)
            from mmfit.recipe.orchestrate import run_recipe

            run = run_recipe(cfg, df, Path(run_dir) if run_dir else None, console)
        else:
            run = loop.train(cfg, df=df, run_dir=Path(run_dir) if run_dir else None, console=console)
    if os.environ.get("RANK", "0") != "0":  # a distributed run: rank 0 reports
        return run
    return _report_run(run, console)


def _report_run(run: Path, console: Console, what: str = "best checkpoint") -> Path:
    """A trained run's test metrics (where it has them) and where it is."""
    from mmfit.report.tables import print_evaluation
    from mmfit.run.store import Run

    test = Run(run).evaluation("test")
    if test:
        print_evaluation(test, console, title=f"test metrics ({what})")
    console.print(f"run directory: [bold]{run}[/bold]")
    return run


def pretrain(config: ConfigLike = None, overrides: Overrides = None, df: Optional[pd.DataFrame] = None,
             run_dir: Optional[Union[str, Path]] = None, resume: Optional[Union[str, Path]] = None,
             console: Optional[Console] = None) -> Path:
    """Self-supervised pretraining of the config's encoders on its manifest (targets not needed, and
    not read); returns the run directory, for `model.encoders.<m>.init`."""
    from mmfit.training.pretrain import pretrain as run_pretrain

    console = console or Console()
    if resume:
        run = run_pretrain(df=df, resume=Path(resume), console=console)
    else:
        if config is None:
            raise ValueError("a config is needed (or resume=RUN_DIR)")
        run = run_pretrain(_config(config, overrides, need_targets=False), df,
                           Path(run_dir) if run_dir else None, console=console)
    console.print(f"run directory: [bold]{run}[/bold] (start training from it with "
                  f"model.encoders.<column>.init: {run})")
    return run


def _demo_variant(cfg: Config, columns: list[str], targets: dict, name: str, epochs: int) -> Config:
    """The demo config on other columns and targets (the same data, split and encoders)."""
    raw = cfg.to_dict()
    raw["data"]["columns"] = {c: r for c, r in raw["data"]["columns"].items() if c in columns}
    raw["data"]["targets"] = targets
    raw["train"].update(epochs=epochs, run_name=name, monitor=None, time_limit=None, lr=1e-3)
    raw["model"]["encoders"] = {m: e for m, e in raw["model"]["encoders"].items()
                                if m in columns or m in ("text", "image", "audio", "tabular")}
    return load_config(raw)


def _demo_matching(cfg: Config, console: Console, start: Optional[Path], epochs: int) -> None:
    """Does this report belong to this scan? A matching model between the two, its encoders started
    from the diagnosis model's where it has its own (`model.encoders.<m>.init`; the full tour) or the
    frozen pretrained ones (the quick demo), and its test retrieval."""
    from mmfit.data.manifest import read_manifest
    from mmfit.deploy.predictor import Predictor
    from mmfit.run.store import Run

    console.rule("[bold]Does this report belong to this scan? (a matching task: scan ~ report)")
    mc = _demo_variant(cfg, ["scan", "report"], {"fits": {"type": "matching", "between": ["scan", "report"]}},
                       "scan-report-matching", epochs)
    if start is not None:  # from scratch, two encoders find nothing to align for many epochs
        for m in ("scan", "report"):
            mc.model.encoders[m] = dataclasses.replace(encoder_config(mc, m), init=str(start))
    run = train(mc, console=Console(quiet=True))
    m = Run(run).evaluation("test")["metrics"]["fits"]
    console.print(f"test: each scan finds its own report among {m['n']} at rank 1 in {m['recall@1']:.1%} of cases "
                  f"and in the top 10 in {m['recall@10']:.1%} (chance: {1 / m['n']:.1%} and {min(1, 10 / m['n']):.1%}); "
                  f"median rank {m['median_rank']:.0f}")
    pred = Predictor.load(run)
    where = Path(mc.data.manifest)
    df = read_manifest(where)
    df = df[(df["report"] != "") & (df["scan"] != "")].head(2).reset_index(drop=True)
    swapped = df.assign(report=df["report"][::-1].to_numpy())
    own, other = pred.predict(df, root=where.parent)["fits"], pred.predict(swapped, root=where.parent)["fits"]
    console.print(f"match score (cosine) of patient 1's scan with its own report {own[0]:+.2f}, with patient 2's "
                  f"report {other[0]:+.2f}  ({run})")


def _demo_report_writer(cfg: Config, console: Console, epochs: int) -> None:
    """The report drafted from the scan, the voice note, age and smoking: a generation task."""
    from mmfit.evaluation.metrics import generation_metrics
    from mmfit.run.loaded import load_run
    from mmfit.run.store import Run

    console.rule("[bold]The report drafted from the scan and the voice note (a generation task)")
    gc = _demo_variant(cfg, ["scan", "voice_note", "age", "smoker"],
                       {"report": {"type": "generation", "max_length": 40}}, "report-writer", epochs)
    gc.data.on_error = "skip"  # patients without a report (RUN/skipped.csv lists them)
    run = train(gc, console=Console(quiet=True))
    m = Run(run).evaluation("test")["metrics"]["report"]
    loaded = load_run(run)
    proc, splits = loaded.pre.targets["report"], loaded.data()

    def texts(split):  # the reports of a split as the model's vocabulary reads them
        d = splits[split]
        return [proc.reference(r) for r, k in zip(d.targets["report"].tolist(), d.target_mask["report"].tolist()) if k]

    train_texts, refs = texts("train"), texts("test")
    common = max(set(train_texts), key=train_texts.count)
    copy = generation_metrics(refs, [common] * len(refs))
    console.print(f"test ROUGE-L {m['rouge_l']:.3f}, BLEU {m['bleu']:.1f} (sacreBLEU), WER {m['wer']:.2f}; copying the "
                  f"most common training report to every patient: ROUGE-L {copy['rouge_l']:.3f}, BLEU {copy['bleu']:.1f}, "
                  f"WER {copy['wer']:.2f}. For example:")
    for e in m["examples"][:2]:
        console.print(f"  written:  {e['generated']}\n  reported: {e['reference']}")
    console.print(f"({run})")


DataLike = Union[str, Path, pd.DataFrame]


def _infer(data: DataLike, target: Union[str, list[str], None], columns: Optional[dict[str, str]], root,
           overrides: Overrides, console: Console, written: bool = False):
    """Roles from content -> (Config, DataFrame or None, choices); prints the roles with reasons, and
    what the targets' values say. Rows without a target stop it here (before any file is read) unless
    data.on_error says otherwise, or the config is only `written` (mmfit init: noted instead)."""
    from mmfit.data.errors import DataError
    from mmfit.data.infer import data_config, files_root, infer_roles, read_any, shared_files, target_checks
    from mmfit.report.tables import print_roles

    if isinstance(data, pd.DataFrame):
        df, base, folder = data, Path(root) if root else Path.cwd(), False
    else:
        df, base, folder = read_any(Path(data))
        base = Path(root) if root else base
        if df.attrs.get("read_as"):
            console.print(f"read {data}{':' if folder else ' as'} {df.attrs['read_as']}")
    targets = [target] if isinstance(target, str) else list(target or (["label"] if folder else []))
    if not targets:
        raise ValueError("name the column(s) to predict: --target COLUMN (or mmfit.fit(data, target=...))")
    parsed = {}
    for t in targets:  # "col" or "col:regression"
        name, _, kind = t.partition(":")
        parsed[name] = kind or None
    choices = infer_roles(df, list(parsed), base, columns)
    for c in choices:
        if c.role == "target" and parsed.get(c.column):
            c.reason = f"{parsed[c.column]} target (given)"
    print_roles(choices, console)
    wide = files_root(df, choices, base) if root is None else base
    if wide != base.resolve():
        base = wide
        console.print(f"data root: {base} (the manifest names its files by absolute paths: the folder that "
                      "holds them all; file paths must stay inside it)")
    manifest = None if folder or isinstance(data, pd.DataFrame) else str(data)
    raw = {"data": data_config(choices, manifest, base)}
    if not raw["data"]["columns"]:
        raise ValueError("no input column is left once the targets and the ignored columns are set aside; "
                         "say which columns to use with --column NAME=ROLE")
    cfg = load_config(raw, overrides)
    errors, notes = target_checks(df, cfg.data.targets, cfg.data.na_values)
    if cfg.data.split.column not in df.columns and not cfg.data.split.group_column:
        notes += shared_files(df, choices)
    for note in notes:
        console.print(f"[yellow]note:[/yellow] {note}")
    if errors:  # found now, before any file is decoded, not after
        if cfg.data.on_error == "raise" and not written:
            raise DataError(errors, "the target column(s)",
                            "Label them, or leave them out with data.on_error=skip (as a Python override: "
                            "overrides=['data.on_error=skip']); they are then listed in the run's skipped.csv.")
        console.print(f"{len(errors)} row(s) have no target value (rows {', '.join(str(e.row) for e in errors[:5])}"
                      f"{', ...' if len(errors) > 5 else ''}): " + (
                          f"left out in training (data.on_error={cfg.data.on_error}), listed in the run's skipped.csv"
                          if cfg.data.on_error != "raise" else
                          "training stops on them unless they are labelled or data.on_error is skip"))
    return cfg, (None if manifest else df), choices


def init(data: DataLike, target: Union[str, list[str], None] = None, output: Union[str, Path] = "mmfit.yaml",
         columns: Optional[dict[str, str]] = None, root=None, overrides: Overrides = None,
         console: Optional[Console] = None) -> Path:
    """Write the config `mmfit train MANIFEST --target COL` would use (roles inferred from content,
    every default filled in), to edit and train with `mmfit train CONFIG`."""
    console = console or Console()
    if isinstance(data, pd.DataFrame):
        raise ValueError("init writes a config that names its manifest: give a file or a folder, not a DataFrame")
    cfg, _, choices = _infer(data, target, columns, root, overrides, console, written=True)
    cfg.recipe.enabled = True
    lines = ["# written by mmfit init: the roles inferred from the manifest's content (edit them freely);",
             "# recipe.enabled: the small-data recipe trains (set it false to train the one model below)"]
    lines += [f"#   {c.column}: {c.role} ({c.reason})" for c in choices]
    output = Path(output)
    output.write_text("\n".join(lines) + "\n" + cfg.to_yaml())
    console.print(f"wrote {output}: train it with mmfit train {output}")
    return output


def fit(data: DataLike, target: Union[str, list[str], None] = None, time_limit: Union[None, int, float, str] = None,
        columns: Optional[dict[str, str]] = None, run_dir: Optional[Union[str, Path]] = None, root=None,
        overrides: Overrides = None, console: Optional[Console] = None, device: str = "auto"):
    """Zero-config training: a manifest (file, folder of class subfolders, or DataFrame) and the
    column(s) to predict. Roles are inferred from content; packaged pretrained encoders are used
    where they exist; the small-data recipe (convex, trees, probe, neighbours, fine-tuned and
    from-scratch members, ensemble selection; mmfit.recipe) runs within `time_limit`
    (600, "10m", "1h"). `overrides`: ["train.lr=1e-3"] or {"train.lr": 1e-3}.
    -> a Predictor of the run (`.path` is its directory)."""
    from mmfit.deploy.predictor import Predictor

    return Predictor.load(fit_run(data, target, time_limit, columns, run_dir, root, overrides, console, device),
                          device=device)


def fit_run(data: DataLike, target: Union[str, list[str], None] = None, time_limit: Union[None, int, float, str] = None,
            columns: Optional[dict[str, str]] = None, run_dir: Optional[Union[str, Path]] = None, root=None,
            overrides: Overrides = None, console: Optional[Console] = None, device: str = "auto") -> Path:
    """`fit` without loading the result: -> the run directory (what the CLI prints)."""
    from mmfit.device import resolve_device
    from mmfit.recipe.orchestrate import run_recipe

    console = console or Console()
    limit = seconds(time_limit)
    cfg, df, choices = _infer(data, target, columns, root, overrides, console)
    cfg.recipe.time_limit = limit
    cfg.train.device = resolve_device(device)
    folder = df is not None and not isinstance(data, pd.DataFrame)  # a class folder: its table is kept in the run
    run = run_recipe(cfg, df, Path(run_dir) if run_dir else None, console, choices, keep_table=folder)
    return _report_run(run, console, "ensemble")


def launch_train(config: Optional[Union[str, Path]], overrides: list[str], run_dir: Optional[Path],
                 resume: Optional[Path], nproc: int, nnodes: int = 1, node_rank: int = 0,
                 master_addr: Optional[str] = None, master_port: int = 29500,
                 console: Optional[Console] = None) -> int:
    """`mmfit train` in `nproc` processes on each of `nnodes` machines, through torchrun; -> exit status."""
    from mmfit.training.distributed import launch
    from mmfit.run.store import new_run_dir

    args = [str(config)] if config else []
    args += list(overrides)
    if resume:
        args += ["--resume", str(resume)]
    else:
        if run_dir is None:  # one name for all processes and machines
            run_dir = new_run_dir(load_config(config, overrides))
        args += ["--output", str(run_dir)]
    (console or Console()).print(f"starting {nproc} process(es) per machine on {nnodes} machine(s): run directory "
                                 f"{run_dir or resume}")
    return launch(args, nproc, nnodes, node_rank, master_addr, master_port)


def train_on_ray(config: ConfigLike, overrides: Overrides, run_dir: Optional[Union[str, Path]], workers: int,
                 device: str = "auto", address: Optional[str] = None, console: Optional[Console] = None) -> Path:
    """Train in `workers` Ray Train workers across a Ray cluster (cluster/train.py); -> the run directory."""
    from mmfit.cluster.train import train_on_ray as on_ray

    console = console or Console()
    config = config.to_dict() if isinstance(config, Config) else config
    run = on_ray(config, overrides or [], run_dir, workers, device=device, address=address, console=console)
    return _report_run(run, console)


def evaluate(run_dir: Union[str, Path], split: str = "test", data: Optional[Union[str, Path, pd.DataFrame]] = None,
             console: Optional[Console] = None, by: Optional[str] = None, bins: int = 4, root=None,
             device: str = "auto") -> dict:
    """Metrics of a run on one of its splits, or on new labelled data (its file paths resolve against
    `root`, else the manifest's folder); writes RUN/eval/<split>.json.
    `by`: a column of the manifest (any, not only an input: speaker, site, age) whose every value, or
    quantile bin of `bins` for numbers, gets its own metrics (`slices` in the JSON, the report)."""
    from mmfit.data.manifest import read_manifest
    from mmfit.deploy.predictor import Predictor
    from mmfit.report.tables import print_evaluation

    console = console or Console()
    if data is None and split not in ("train", "val", "test"):
        raise ValueError(f"--split must be train, val or test, not {split!r}")
    pred = Predictor.load(run_dir, device=device)
    if data is not None:
        tensors, df = pred.read(data, root)
        name = "data" if not isinstance(data, (str, Path)) else Path(data).stem
    else:
        tensors = pred.data()[split]
        df = read_manifest(Path(pred.cfg.data.manifest)) if by else None
        name = split
    result = pred.evaluate_tensors(tensors)
    if by:
        result["slices"] = _slices(pred, tensors, df, by, bins)
    spec = pred.run.ensemble()
    result.update(split=name, run=str(pred.run), **({"ensemble": spec["weights"]} if spec else {}))
    if spec and spec.get("refit") and data is None and split != "test":
        result["note"] = (f"members {', '.join(spec['refit'])} were refit on train + val: these rows are "
                          "training data to them; the validation scores they were chosen by are in ensemble.json")
        console.print(f"[yellow]note: {result['note']}")
    path = pred.run.write_evaluation(name, result)
    print_evaluation(result, console)
    console.print(f"wrote {path}")
    return result


def _slices(pred, tensors, df: pd.DataFrame, by: str, bins: int) -> dict:
    from mmfit.evaluation.slices import slice_labels, slice_metrics

    if by not in df.columns:
        raise ValueError(f"--by {by}: the manifest has no column {by!r} (it has: {', '.join(map(str, df.columns))})")
    if bins < 1:
        raise ValueError(f"--bins must be >= 1, got {bins}")
    cc = pred.cfg.data.columns.get(by)
    if cc is not None and cc.role == "vector" or any(isinstance(v, (list, tuple, np.ndarray)) for v in df[by].head(50)):
        raise ValueError(f"--by {by}: a column of lists (a vector) has no values to slice by; choose a column of "
                         "labels or numbers (a site, a speaker, an age)")
    labels, how = slice_labels(df[by].iloc[tensors.rows.numpy()].reset_index(drop=True), bins)
    return slice_metrics(pred.predict_tensors(tensors), pred.pre, labels, by, how)


def predict(run_dir: Union[str, Path], data: Union[str, Path, pd.DataFrame], output: Optional[Union[str, Path]] = None,
            on_error: str = "raise", console: Optional[Console] = None, root=None, device: str = "auto",
            backend: str = "local", runtime: str = "torch", workers: Optional[int] = None,
            address: Optional[str] = None) -> Union[pd.DataFrame, dict]:
    """Predictions for new rows (a manifest, whose file paths resolve against `root`, else its folder;
    a folder of files, for a run with one file input; or a DataFrame), written to `output` with the
    rows left out beside it. `runtime`: torch, or onnx (model.onnx). `backend="ray"`: across a Ray
    cluster (cluster/predict.py): `data` a manifest, a folder or a glob of shards (local or URL),
    `output` a folder of Parquet files; -> its summary (rows, rows/s, where)."""
    from mmfit.deploy.predictor import Predictor

    if backend == "ray":
        from mmfit.cluster.predict import predict_on_ray

        if isinstance(data, pd.DataFrame) or output is None:
            raise ValueError("backend='ray' predicts a manifest (path, folder, glob or URL) into an output folder")
        return predict_on_ray(run_dir, str(data), output, on_error=on_error, root=root, device=device,
                              backend=runtime, workers=workers, address=address, log=(console or Console()).print)
    if backend != "local":
        raise ValueError(f"backend must be local or ray, not {backend!r}")
    pred = Predictor.load(run_dir, device=device, backend=runtime)
    from_file = isinstance(data, (str, Path))
    df, root = pred.table(data, root) if from_file else (data, root)
    out = pred.predict(df, root=root, on_error=on_error)
    if from_file:  # carry the manifest's first (id-like) column along, so rows can be matched
        out.insert(1, df.columns[0], df.iloc[out["row"].to_numpy(), 0].to_numpy())
    if output:
        out.to_csv(output, index=False)
        (console or Console()).print(f"wrote {len(out)} predictions to {output}{_list_skipped(output, pred.last_log)}")
    return out


def _list_skipped(output: Union[str, Path], log) -> str:
    """Nothing left out silently: the rows and cells `--on-error` left out, beside `output`
    (OUTPUT.skipped.csv) -> what to add to the message ('' where none was)."""
    if not log.errors:
        return ""
    listed = Path(output).with_suffix(".skipped.csv")
    listed.write_text(log.csv())
    return (f" ({len(log.bad_rows())} row(s) skipped, {log.cells_absent()} file(s) read as absent, "
            f"per --on-error: listed in {listed})")


def embed(run_dir: Union[str, Path], data: Union[str, Path, pd.DataFrame], output: Optional[Union[str, Path]] = None,
          on_error: str = "raise", console: Optional[Console] = None, root=None, device: str = "auto",
          backend: str = "local", workers: Optional[int] = None, address: Optional[str] = None
          ) -> Union[pd.DataFrame, dict]:
    """Each row with the file and text columns the run's model encodes replaced by their embeddings
    (Predictor.embeddings), written as Parquet to `output`: a table a later run trains on (`mmfit
    train OUTPUT --target T` reads the lists as vector columns) without decoding or encoding the
    files again. Rows left out are listed beside it. `backend="ray"`: across a Ray cluster, `data` a
    manifest, a folder or a glob of shards, `output` a folder of Parquet files; -> its summary."""
    from mmfit.deploy.predictor import Predictor

    if backend == "ray":
        from mmfit.cluster.predict import predict_on_ray

        if isinstance(data, pd.DataFrame) or output is None:
            raise ValueError("backend='ray' embeds a manifest (path, folder, glob or URL) into an output folder")
        return predict_on_ray(run_dir, str(data), output, on_error=on_error, root=root, device=device,
                              workers=workers, address=address, log=(console or Console()).print, what="embeddings")
    if backend != "local":
        raise ValueError(f"backend must be local or ray, not {backend!r}")
    pred = Predictor.load(run_dir, device=device)
    out = pred.embeddings(data, root=root, on_error=on_error)
    if output:
        from mmfit.run.files import atomic_write

        buf = io.BytesIO()
        out.to_parquet(buf, index=False)
        atomic_write(Path(output), buf.getvalue())
        (console or Console()).print(f"wrote {len(out)} rows with the embeddings of {', '.join(pred.embedded())} "
                                     f"to {output}{_list_skipped(output, pred.last_log)}")
    return out


def leaderboard(run_dir: Union[str, Path], output: Optional[Union[str, Path]] = None,
                console: Optional[Console] = None) -> pd.DataFrame:
    """Every candidate the run weighed (Predictor.leaderboard), printed; written as CSV to `output`."""
    from mmfit.deploy.predictor import leaderboard as board_of
    from mmfit.report.tables import print_frame
    from mmfit.run.store import Run

    board = board_of(Run(run_dir))
    console = console or Console()
    print_frame(board, console, title=f"leaderboard of {run_dir} (validation; weight 0: not chosen)")
    if output:
        board.to_csv(output, index=False)
        console.print(f"wrote {output}")
    return board


def merge(run_dir: Union[str, Path], output: Optional[Union[str, Path]] = None,
          data: Optional[Union[str, Path]] = None, console: Optional[Console] = None) -> dict:
    """Fold LoRA/IA3 adapters into the base weights; a new run directory that loads without peft."""
    from mmfit.optimize.commands import merge_run

    console = console or Console()
    rep = merge_run(run_dir, output, data)
    layers = ", ".join(f"{m}: {k} layers" for m, k in rep["merged_layers"].items())
    console.print(f"merged adapters ({layers}) into {rep['output']}")
    console.print(f"parity on {rep['checked_on']}: max abs difference {rep['max_abs_diff_logits']:.2e} (logits), "
                  f"{rep['max_abs_diff_probs']:.2e} (probabilities)")
    return rep


def _print_step(rec: dict, console: Console) -> None:
    s = rec["steps"][-1]
    before, after = s.get("test_score_before"), s.get("test_score")
    parts = [f"{s['method']}: {rec['output']}"]
    if "params" in s:
        parts.append(f"parameters {s.get('params_before', 0) / 1e6:.2f}M -> {s['params'] / 1e6:.2f}M"
                     + (f" ({s['nonzero'] / 1e6:.2f}M non-zero)" if "nonzero" in s else ""))
    if "size_mb" in s:
        parts.append(f"size {s['size_mb_before']:.1f} MB -> {s['size_mb']:.1f} MB")
    if "max_abs_diff_logits" in s:
        parts.append(f"max abs logit difference to the source {s['max_abs_diff_logits']:.2e} ({s['checked_on']})")
    if before is not None and after is not None:
        parts.append(f"test score {before:.4f} -> {after:.4f}")
    console.print("\n  ".join(parts))


def prune(run_dir: Union[str, Path], sparsity: float = 0.5, method: str = "structured", finetune_epochs: int = 0,
          output: Optional[Union[str, Path]] = None, df: Optional[pd.DataFrame] = None,
          console: Optional[Console] = None) -> dict:
    """Prune a run into a new run directory (optionally with recovery fine-tuning on the run's data,
    or on `df` for a run trained from a DataFrame)."""
    from mmfit.optimize.commands import prune_run

    console = console or Console()
    rec = prune_run(run_dir, sparsity, method, finetune_epochs, output, console=console, log=console.print, df=df)
    _print_step(rec, console)
    return rec


def quantize(run_dir: Union[str, Path], method: str = "dynamic-int8", output: Optional[Union[str, Path]] = None,
             console: Optional[Console] = None) -> dict:
    """Quantize a run into a new run directory: dynamic-int8, onnx-int8, fp16 or bf16."""
    from mmfit.optimize.commands import quantize_run

    console = console or Console()
    rec = quantize_run(run_dir, method, output)
    _print_step(rec, console)
    return rec


def distill(teacher: Union[str, Path], student_config: Union[str, Path], overrides: Overrides = None,
            run_dir: Optional[Union[str, Path]] = None, df: Optional[pd.DataFrame] = None,
            console: Optional[Console] = None) -> dict:
    """Train a student config on a teacher run's soft targets (and the labels)."""
    from mmfit.optimize.commands import distill_run

    console = console or Console()
    rec = distill_run(teacher, student_config, overrides, run_dir, df=df, console=console)
    _print_step(rec, console)
    return rec


def export(run_dir: Union[str, Path], fmt: str = "onnx", output: Optional[Union[str, Path]] = None,
           data: Optional[Union[str, Path]] = None, console: Optional[Console] = None) -> dict:
    """Export to ONNX (one graph, a tensor per modality + presence masks, dynamic batch) and check parity."""
    from mmfit.deploy.export import export_run

    console = console or Console()
    rep = export_run(run_dir, fmt, output, data)
    parity = ", ".join(f"{k} {v:.1e}" for k, v in rep["max_abs_diff_logits"].items())
    console.print(f"wrote {rep['path']} ({rep['size_mb']:.1f} MB, opset {rep['opset']})\n"
                  f"  parity with PyTorch on {rep['checked_on']}, max abs logit difference: {parity}\n"
                  f"  inputs: {', '.join(rep['inputs'])}")
    return rep


def preprocess(config: ConfigLike, overrides: Overrides = None, console: Optional[Console] = None,
               workers: int = 0, backend: str = "local", address: Optional[str] = None) -> dict:
    """Decode every file of the manifest into the feature cache ahead of training, one shard of
    data.shard_rows rows at a time (in `workers` processes when > 1, else in threads; with
    backend="ray", in tasks across the Ray cluster at `address` or $RAY_ADDRESS, whose machines must
    all see the cache folder); validates every row on the way. A later `train` with the same data and
    preprocessing settings decodes nothing; shards already cached (by an earlier or a concurrent run)
    are not decoded again. The shards are the same bytes whichever backend wrote them.
    -> {split: rows, "skipped": rows, "cache": dir}."""
    from mmfit.data.cache import FeatureCache
    from mmfit.data.prepare import prepare_training

    console = console or Console()
    cfg = _config(config, overrides)
    t0 = time.time()
    pool = None
    if backend == "ray":
        from mmfit.cluster.engine import RayPool, connect

        pool = RayPool(connect(address))
        workers = workers or pool.workers
    elif backend != "local":
        raise ValueError(f"backend must be local or ray, not {backend!r}")
    _, splits, errors = prepare_training(cfg, log=console.print, workers=workers, pool=pool)
    out = {s: len(d) for s, d in splits.items()}
    out.update(skipped=len(errors.bad_rows()), cache=str(FeatureCache(cfg.data.cache_dir).dir),
               seconds=round(time.time() - t0, 1))
    for e in errors.errors[:10]:
        console.print(f"  skipped: {e}")
    console.print(f"preprocessed {sum(out[s] for s in splits)} rows ({out['train']} train / {out['val']} val / "
                  f"{out['test']} test; {out['skipped']} skipped) in {out['seconds']}s; features cached in {out['cache']}")
    return out


def tune(config: ConfigLike, overrides: Overrides = None, trials: Optional[int] = None,
         storage: Optional[str] = None, study_name: Optional[str] = None, workers: int = 1,
         out: Optional[Union[str, Path]] = None, console: Optional[Console] = None, backend: str = "local",
         address: Optional[str] = None) -> dict:
    """Hyperparameter search with Optuna over the config's `tune.space`; see mmfit.optimize.tune
    (backend="ray": the workers as Ray tasks)."""
    from mmfit.optimize.tune import tune as _tune

    if isinstance(config, Config):
        config = config.to_dict()
    return _tune(config, overrides, trials, storage, study_name, workers, out, console=console, backend=backend,
                 address=address)


def serve(run_dir: Union[str, Path], backend: str = "torch", host: str = "127.0.0.1", port: int = 8000,
          options=None, threads: int = 0, console: Optional[Console] = None,
          gallery: Optional[Union[str, Path]] = None, device: str = "auto") -> None:
    """Serve a run over HTTP (FastAPI + uvicorn) until interrupted; see mmfit.deploy.server."""
    import uvicorn

    from mmfit.deploy.server import create_app

    app = create_app(run_dir, backend, options, threads, gallery, device)  # a run that cannot be served fails here, before any claim
    (console or Console()).print(f"serving {run_dir} ({backend}, {app.state.device}) at http://{host}:{port}/  (API docs: /docs)")
    uvicorn.run(app, host=host, port=port, log_level="info")


def robustness(run_dir: Union[str, Path], split: str = "test", data: Optional[Union[str, Path, pd.DataFrame]] = None,
               seed: int = 0, attacks: bool = True, console: Optional[Console] = None, device: str = "auto") -> dict:
    """The run's headline metric under corruptions, attacks and missing modalities
    (evaluation/robustness.py): RUN/eval/robustness.json and robustness.png; `mmfit report` shows them."""
    from mmfit.deploy.predictor import Predictor
    from mmfit.evaluation.robustness import robustness as measure
    from mmfit.evaluation.robustness import robustness_figure

    console = console or Console()
    pred = Predictor.load(run_dir, device=device)
    df, root = pred.table(data) if data is not None else (None, None)
    result = measure(pred, split, df, root, seed, attacks, log=console.print)
    result["split"] = split if data is None else "data"
    path = pred.run.write_evaluation("robustness", result)
    fig = robustness_figure(result)
    if fig is not None:
        import matplotlib.pyplot as plt

        fig.savefig(path.with_suffix(".png"), dpi=110)
        plt.close(fig)
    console.print(f"wrote {path}")
    return result


def report(run_dir: Union[str, Path], output: Optional[Union[str, Path]] = None,
           console: Optional[Console] = None) -> Path:
    """Write RUN/report.html: one self-contained page of plots and a model card."""
    from mmfit.report.html import write_report

    console = console or Console()
    path = write_report(run_dir, output)
    console.print(f"wrote {path}")
    return path


def augment_preview(config: ConfigLike, output: Union[str, Path] = "augment-preview.png",
                    overrides: Overrides = None, n: int = 6, seed: int = 0,
                    console: Optional[Console] = None) -> Path:
    """Draw original vs augmented images and spectrograms; print augmented texts."""
    from mmfit.report.preview import augment_preview as draw, describe

    console = console or Console()
    cfg = _config(config, overrides)
    console.print(f"augmentation: {describe(cfg) or 'all off (set augment.* in the config)'}")
    path, lines = draw(cfg, Path(output), n=n, seed=seed)
    for ln in lines:
        console.print(ln, markup=False, highlight=False)
    console.print(f"wrote {path}")
    return path


DEMO_LIMIT = 90  # seconds for the quick demo's zero-config recipe: the whole demo stays within 3 minutes on 2 cores


def demo(out_dir: Union[str, Path] = "mmfit-demo", n: Optional[int] = None, overrides: Overrides = None,
         console: Optional[Console] = None, full: bool = False, time_limit: Union[None, int, float, str] = None) -> Path:
    """The synthetic clinic. Quick (default, about 3 minutes on 2 cores): generate 600 patients, train
    the zero-config recipe on them (what `mmfit train MANIFEST --target ...` runs), show the test
    metrics against each modality alone, the leaderboard and the HTML report, then a matching model
    (does this report belong to this scan?) and a report writer on the same frozen features.
    `full`: 1500 patients and the fixed demo config (configs/demo.yaml), as the tour was before.
    -> the diagnosis run's directory."""
    from mmfit.data.demo import generate
    from mmfit.run.layout import MEMBERS
    from mmfit.run.store import Run

    console = console or Console()
    out_dir = Path(out_dir)
    t0 = time.time()
    console.rule("[bold]mmfit demo: a synthetic clinic")
    console.print("Each patient: a CT scan, a radiology report, a doctor's voice note, an age and a smoking history.\n"
                  "Task: the diagnosis (normal / cyst / benign tumour / malignant tumour) and a severity score.\n"
                  "Every modality carries only part of the evidence; the fused model must combine them.")
    n = n or (1500 if full else 600)
    manifest = generate(out_dir / "data", n=n)
    console.print(f"generated {n} patients in {out_dir / 'data'} ({time.time() - t0:.1f}s)")
    where = [f"train.output_dir={out_dir / 'runs'}", f"data.cache_dir={out_dir / 'cache'}"]
    if full:
        cfg = _config(load_config(packaged_config("demo"), [f"data.manifest={manifest}", *where]), overrides)
        run = train(cfg, console=console)
    else:
        limit = seconds(time_limit) or DEMO_LIMIT
        console.rule(f"[bold]Zero-config: mmfit train {manifest} --target diagnosis --target severity:regression "
                     f"--time-limit {limit:.0f}s")
        run = fit_run(manifest, ["diagnosis", "severity:regression"], limit, run_dir=out_dir / "runs" / "diagnosis",
                      overrides=_override_list(where, overrides), console=console)
        cfg = Run(run / MEMBERS / "probe").config()  # frozen pretrained encoders: their outputs are cached now
    _demo_verdict(run, console)
    if not full:
        _demo_leaderboard(run, console)
    report(run, console=console)
    _demo_matching(cfg, console, run if full else None, epochs=12 if full else 40)
    _demo_report_writer(cfg, console, epochs=15 if full else 12)
    console.print(f"demo finished in {time.time() - t0:.0f}s. Open {run / 'report.html'} in a browser; try the model "
                  f"in yours with: mmfit serve {run}  (then http://127.0.0.1:8000/). Also: "
                  f"mmfit predict {run} {manifest} -o preds.csv; mmfit export {run}"
                  + ("" if full else "; mmfit demo --full for the longer tour"))
    return run


def _demo_leaderboard(run: Path, console: Console) -> None:
    """The candidates the ensemble chose, per task (`mmfit leaderboard RUN` lists them all)."""
    from mmfit.deploy.predictor import leaderboard as board_of
    from mmfit.report.tables import print_frame
    from mmfit.run.store import Run

    board = board_of(Run(run))
    score = [c for c in ("val_macro_f1", "val_r2") if c in board]
    chosen = board[board["weight"] > 0][["task", "member", "head", *score, "weight"]]
    print_frame(chosen, console, title=f"the ensemble: {len(chosen)} of {len(board)} candidates chosen on validation "
                                       f"(all: mmfit leaderboard {run})")


def _override_list(base: list[str], overrides: Overrides) -> Overrides:
    """Base dotted overrides, then the user's (a list or a dict)."""
    if isinstance(overrides, dict):
        return {**dict(x.split("=", 1) for x in base), **overrides}
    return [*base, *(overrides or [])]


def _demo_verdict(run: Path, console: Console) -> None:
    """The fused diagnosis against every single-modality ablation on test."""
    from mmfit.run.store import Run

    result = Run(run).evaluation("test")
    fused = result["metrics"]["diagnosis"]["macro_f1"]
    worst_gap = min(fused - v["diagnosis"]["macro_f1"] for k, v in result["ablation"].items()
                    if k.startswith("without_"))
    best_single = max(v["diagnosis"]["macro_f1"] for k, v in result["ablation"].items() if k.startswith("only_"))
    verdict = "[green]higher than every single-modality ablation[/green]" if fused > best_single else \
        "[red]NOT higher than every single-modality ablation[/red]"
    console.print(f"\nfused diagnosis macro-F1 {fused:.3f}: {verdict} (best single modality alone: {best_single:.3f}; "
                  f"smallest drop when one modality is removed: {worst_gap:+.3f})")
