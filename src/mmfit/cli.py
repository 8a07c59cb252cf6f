"""The command line: a table of subcommands, each a call into mmfit.api (no logic here)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from mmfit.device import DEVICE_HELP

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  help="Train, evaluate and use multimodal models from one manifest.")
console = Console()
# the options every command shares, spelt one way: -o/--output for what it writes, --device where a model runs
DEVICE = typer.Option("auto", "--device", help=DEVICE_HELP)
TRAIN_DEVICE = typer.Option(None, "--device", help=f"{DEVICE_HELP} (default: train.device of the config, auto)")
ADDRESS = typer.Option(None, help="--backend ray: the cluster (default $RAY_ADDRESS)")
ROOT = typer.Option(None, help="the folder file paths resolve against (default: the manifest's folder)")
REPLICAS = typer.Option(None, help="--backend ray: model replicas (default: one per CPU)")
TABLE_BACKEND = typer.Option("local", help="local, or ray: across a Ray cluster ($RAY_ADDRESS or --address; else a "
                                           "local one), a folder of Parquet parts out")


def _table_output(backend: str, output: Path, default: Path) -> Path:
    """The default output of predict and embed is a file; on Ray it is a folder of parts (no suffix)."""
    return output.with_suffix("") if backend == "ray" and output == default else output


def _version(value: bool) -> None:
    if value:
        from mmfit.version import __version__

        console.print(f"mmfit {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", "-V", callback=_version, is_eager=True,
                                       help="print the version and exit")):
    """Train, evaluate and use multimodal models from one manifest."""


def _on(overrides: Optional[List[str]], device: Optional[str]) -> list[str]:
    """A training command's overrides with --device as train.device."""
    return [*(overrides or []), *([f"train.device={device}"] if device else [])]


@app.command()
def demo(output: Path = typer.Option(Path("mmfit-demo"), "-o", "--output", help="where data and runs go"),
         n: Optional[int] = typer.Option(None, help="patients to generate (default 600; 1500 with --full)"),
         full: bool = typer.Option(False, "--full", help="the whole tour (about 7 minutes on 2 cores): the fixed "
                                                         "demo config, its report, matching and report writing"),
         device: Optional[str] = TRAIN_DEVICE,
         overrides: Optional[List[str]] = typer.Argument(None, help="dotted overrides, e.g. train.epochs=5")):
    """A synthetic clinic (scan + report + voice note + age): zero-config training, the test metrics and
    the modality ablation, the report, a matching model; --full adds the fixed config and report writing."""
    from mmfit import api

    api.demo(output, n, _on(overrides, device), console=console, full=full)


@app.command()
def train(config: Optional[Path] = typer.Argument(None, help="YAML config; or a manifest (CSV/TSV/JSONL/Parquet/XLSX) or "
                                                             "a folder of class subfolders, with --target"),
          overrides: Optional[List[str]] = typer.Argument(None, help="dotted overrides, e.g. train.epochs=3"),
          target: Optional[List[str]] = typer.Option(None, "--target", help="with a manifest: the column to predict "
                                                     "(COL, or COL:regression); repeat for more tasks"),
          time_limit: Optional[str] = typer.Option(None, "--time-limit", help="with a manifest: 600, 10m, 1h"),
          column: Optional[List[str]] = typer.Option(None, "--column", help="with a manifest: NAME=ROLE overrides an "
                                                     "inferred role (text, image, audio, video, numeric, "
                                                     "categorical, datetime, ignore)"),
          root: Optional[Path] = typer.Option(None, "--root", help="with a manifest: folder file paths resolve against"),
          run_dir: Optional[Path] = typer.Option(None, "-o", "--output", help="run directory (default: "
                                                 "output_dir/run-<time>)"),
          resume: Optional[Path] = typer.Option(None, "--resume", help="continue the run in this directory"),
          device: Optional[str] = TRAIN_DEVICE,
          nproc: int = typer.Option(1, "--nproc", help="processes on this machine (DistributedDataParallel "
                                                        "through torchrun; gloo on CPU, nccl on GPUs)"),
          nnodes: int = typer.Option(1, "--nnodes", help="machines taking part (each runs the same command)"),
          node_rank: int = typer.Option(0, "--node-rank", help="this machine's index, 0 .. nnodes-1"),
          master_addr: Optional[str] = typer.Option(None, "--master-addr", help="host of node 0 (nnodes > 1)"),
          master_port: int = typer.Option(29500, "--master-port"),
          backend: str = typer.Option("local", help="local (torchrun with --nproc), or ray: Ray Train workers "
                                                    "across a Ray cluster ($RAY_ADDRESS or --address)"),
          workers: int = typer.Option(2, help="--backend ray: training processes"),
          address: Optional[str] = ADDRESS):
    """Train a model from a config (on several processes / machines with --nproc / --nnodes), or from
    a manifest and --target with no config at all (roles inferred, the small-data recipe, --time-limit)."""
    from mmfit import api

    if config is not None and _is_manifest(config):
        api.fit_run(config, target, time_limit, _roles(column), run_dir, root, overrides or [], console=console,
                    device=device or "auto")
        return
    overrides = _on(overrides, device)
    if target or time_limit or column:
        raise typer.BadParameter("--target, --time-limit and --column go with a manifest, not a YAML config "
                                 "(put targets in data.targets)")
    if backend == "ray":
        if resume:
            raise typer.BadParameter("--backend ray resumes by itself after a worker dies; --resume a run with "
                                     "--nproc or alone")
        api.train_on_ray(config, overrides or [], run_dir, workers, device=device or "auto", address=address,
                         console=console)
        return
    if backend != "local":
        raise typer.BadParameter(f"--backend: local or ray, not {backend!r}")
    if nproc > 1 or nnodes > 1:
        raise SystemExit(api.launch_train(config, overrides or [], run_dir, resume, nproc, nnodes, node_rank,
                                          master_addr, master_port, console=console))
    api.train(config, overrides or [], run_dir=run_dir, resume=resume, console=console)


@app.command()
def pretrain(config: Optional[Path] = typer.Argument(None, help="YAML config (data.targets may be empty)"),
             overrides: Optional[List[str]] = typer.Argument(None, help="dotted overrides, e.g. pretrain.mlm=0"),
             run_dir: Optional[Path] = typer.Option(None, "-o", "--output", help="run directory"),
             resume: Optional[Path] = typer.Option(None, "--resume", help="continue the run in this directory"),
             device: Optional[str] = TRAIN_DEVICE):
    """Pretrain the config's encoders on its manifest's inputs, no labels needed: masked language
    modelling (text), masked patch modelling (images, spectrograms), cross-modal contrastive. Train
    from the result with model.encoders.<column>.init: RUN."""
    from mmfit import api

    api.pretrain(config, _on(overrides, device), run_dir=run_dir, resume=resume, console=console)


def _is_manifest(path: Path) -> bool:
    return path.is_dir() or path.suffix.lower() not in (".yaml", ".yml")


def _roles(items: Optional[List[str]]) -> dict[str, str]:
    out = {}
    for item in items or []:
        name, sep, role = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"--column {item}: write NAME=ROLE, e.g. --column notes=text")
        out[name] = role
    return out


@app.command()
def init(manifest: Path = typer.Argument(..., help="CSV/TSV/JSONL/Parquet/XLSX, or a folder of class subfolders"),
         target: Optional[List[str]] = typer.Option(None, "--target", help="the column to predict (COL or COL:regression)"),
         output: Path = typer.Option(Path("mmfit.yaml"), "-o", "--output"),
         column: Optional[List[str]] = typer.Option(None, "--column", help="NAME=ROLE overrides an inferred role"),
         root: Optional[Path] = typer.Option(None, "--root", help="folder file paths resolve against"),
         overrides: Optional[List[str]] = typer.Argument(None, help="dotted overrides")):
    """Write the config that `mmfit train MANIFEST --target COL` would infer, to read and edit."""
    from mmfit import api

    api.init(manifest, target, output, _roles(column), root, overrides or [], console=console)


@app.command()
def preprocess(config: Path, overrides: Optional[List[str]] = typer.Argument(None),
               workers: int = typer.Option(0, help="decode shards in this many processes (0: threads of one); "
                                                   "--backend ray: blocks in flight (default: the cluster's CPUs)"),
               backend: str = typer.Option("local", help="local, or ray: shards decoded by tasks across a Ray "
                                                         "cluster into a cache folder every machine sees"),
               address: Optional[str] = ADDRESS):
    """Decode and cache every file ahead of training, shard by shard; checks every row on the way."""
    from mmfit import api

    api.preprocess(config, overrides or [], console=console, workers=workers, backend=backend, address=address)


@app.command()
def validate(config: Path, overrides: Optional[List[str]] = typer.Argument(None)):
    """Check a config (keys, types, names) and that its manifest has the columns it names."""
    from mmfit import api

    api.validate(config, overrides or [], console=console)


@app.command()
def evaluate(run: Path, split: str = typer.Option("test", help="train, val or test"),
             data: Optional[Path] = typer.Option(None, help="evaluate on this labelled manifest instead (or a folder "
                                                            "of class subfolders)"),
             by: Optional[str] = typer.Option(None, help="metrics per value of this manifest column (speaker, "
                                                         "site, age)"),
             bins: int = typer.Option(4, help="--by a numeric column with more values: this many quantile bins"),
             root: Optional[Path] = typer.Option(None, help="with --data: the folder its file paths resolve "
                                                            "against (default: the manifest's folder)"),
             device: str = DEVICE):
    """Metrics (per task, per class, confusion, AUROC) and the modality ablation; writes RUN/eval/<split>.json."""
    from mmfit import api

    api.evaluate(run, split, data, console=console, by=by, bins=bins, root=root, device=device)


@app.command()
def robustness(run: Path, split: str = typer.Option("test", help="train, val or test"),
               data: Optional[Path] = typer.Option(None, help="a labelled manifest instead of a split"),
               seed: int = typer.Option(0, help="the corruptions' and attacks' random draws"),
               attacks: bool = typer.Option(True, help="FGSM / PGD at four epsilons (the slowest part)"),
               device: str = DEVICE):
    """The headline metric under corrupted images, audio, text and numbers (3 severities), FGSM/PGD
    attacks and each modality removed; writes RUN/eval/robustness.json and .png."""
    from mmfit import api

    api.robustness(run, split, data, seed, attacks, console=console, device=device)


@app.command()
def predict(run: Path, data: Path, output: Path = typer.Option(Path("predictions.csv"), "-o", "--output"),
            on_error: str = typer.Option("raise", help="raise; skip bad rows; or missing: an unreadable file "
                                                       "leaves its modality absent, the row is predicted"),
            root: Optional[Path] = ROOT,
            device: str = DEVICE,
            backend: str = TABLE_BACKEND,
            runtime: str = typer.Option("torch", help="torch, or onnx (needs mmfit export first)"),
            workers: Optional[int] = REPLICAS,
            address: Optional[str] = ADDRESS):
    """Predict labels and class probabilities for a manifest (or a folder of images, sounds or videos,
    for a run with one file input); rows may lack modalities. With --backend ray the manifest may be a
    folder or glob of shards (local or URL) and OUTPUT a folder of Parquet files."""
    from mmfit import api

    api.predict(run, data, _table_output(backend, output, Path("predictions.csv")), on_error=on_error,
                console=console, root=root, device=device, backend=backend, runtime=runtime, workers=workers,
                address=address)


@app.command()
def embed(run: Path, data: Path, output: Path = typer.Option(Path("embeddings.parquet"), "-o", "--output"),
          on_error: str = typer.Option("raise", help="raise; skip bad rows; or missing: an unreadable file "
                                                     "leaves its embedding empty, the row is kept"),
          root: Optional[Path] = ROOT,
          device: str = DEVICE,
          backend: str = TABLE_BACKEND,
          workers: Optional[int] = REPLICAS,
          address: Optional[str] = ADDRESS):
    """Each row with the image, audio, video and text columns the run encodes replaced by their
    embeddings (`<column>_embedding`, Parquet arrays), other columns kept: `mmfit train OUTPUT --target
    T` then trains on the vectors without decoding the files again."""
    from mmfit import api

    api.embed(run, data, _table_output(backend, output, Path("embeddings.parquet")), on_error=on_error,
              console=console, root=root, device=device, backend=backend, workers=workers, address=address)


@app.command()
def merge(run: Path, output: Optional[Path] = typer.Option(None, "-o", "--output", help="default: RUN-merged"),
          data: Optional[Path] = typer.Option(None, help="manifest whose rows check parity (default: the run's)")):
    """Fold LoRA/IA3 adapters into the base weights: a run that predicts the same and loads without peft."""
    from mmfit import api

    api.merge(run, output, data, console=console)


@app.command()
def prune(run: Path, sparsity: float = typer.Option(0.5, help="share of weights (magnitude) or units (structured)"),
          method: str = typer.Option("structured", help="magnitude or structured"),
          finetune_epochs: int = typer.Option(0, "--finetune-epochs", help="recovery fine-tuning epochs"),
          output: Optional[Path] = typer.Option(None, "-o", "--output", help="default: RUN-<method><percent>")):
    """Prune a run: global magnitude, or structured (heads, FFN neurons, conv channels removed)."""
    from mmfit import api

    api.prune(run, sparsity, method, finetune_epochs, output, console=console)


@app.command()
def quantize(run: Path, method: str = typer.Option("dynamic-int8", help="dynamic-int8, onnx-int8, fp16 or bf16"),
             output: Optional[Path] = typer.Option(None, "-o", "--output", help="default: RUN-<method>")):
    """Quantize a run into a new run directory (int8 in PyTorch or ONNX Runtime, or half precision)."""
    from mmfit import api

    api.quantize(run, method, output, console=console)


@app.command()
def distill(teacher: Path, student: Path = typer.Argument(..., help="student YAML config (data defaults to the teacher's)"),
            overrides: Optional[List[str]] = typer.Argument(None),
            run_dir: Optional[Path] = typer.Option(None, "-o", "--output", help="run directory"),
            device: Optional[str] = TRAIN_DEVICE):
    """Distil a teacher run into a smaller student (KL at temperature T + hard labels, optional feature matching)."""
    from mmfit import api

    api.distill(teacher, student, _on(overrides, device), run_dir, console=console)


@app.command()
def export(run: Path, format: str = typer.Option("onnx", "--format"),
           output: Optional[Path] = typer.Option(None, "-o", "--output", help="default: RUN/model.onnx"),
           data: Optional[Path] = typer.Option(None, help="manifest whose rows check parity (default: the run's)")):
    """Export one ONNX graph (a tensor per modality + presence masks, dynamic batch); prints parity with PyTorch."""
    from mmfit import api

    api.export(run, format, output, data, console=console)


@app.command()
def tune(config: Path, overrides: Optional[List[str]] = typer.Argument(None, help="dotted overrides"),
         trials: Optional[int] = typer.Option(None, help="default: tune.trials"),
         storage: Optional[str] = typer.Option(None, help="Optuna storage URL shared by workers (default: SQLite "
                                                           "in the study directory)"),
         study_name: Optional[str] = typer.Option(None, "--study-name", help="default: mmfit"),
         workers: int = typer.Option(1, help="worker processes (--backend ray: Ray tasks)"),
         out: Optional[Path] = typer.Option(None, "-o", "--output", help="study directory (default: "
                                                                           "output_dir/tune-<time>)"),
         device: Optional[str] = TRAIN_DEVICE,
         backend: str = typer.Option("local", help="local, or ray: the workers as tasks across a Ray cluster"),
         address: Optional[str] = ADDRESS):
    """Hyperparameter search over `tune.space` (grid, random, TPE; median/hyperband pruning); writes best.yaml."""
    from mmfit import api

    api.tune(config, _on(overrides, device), trials, storage, study_name, workers, out, console=console,
             backend=backend, address=address)


@app.command()
def serve(run: Path, backend: str = typer.Option("torch", help="torch or onnx (needs mmfit export first)"),
          host: str = typer.Option("127.0.0.1"), port: int = typer.Option(8000),
          max_batch: int = typer.Option(32, help="rows per forward pass; 1 turns micro-batching off"),
          max_wait_ms: float = typer.Option(5.0, help="how long a request waits for others to batch with"),
          timeout: float = typer.Option(30.0, help="seconds per request"),
          max_body_mb: float = typer.Option(20.0), threads: int = typer.Option(0, help="onnxruntime threads"),
          max_inflight_mb: float = typer.Option(100.0, help="decoded input of all requests in flight (from the "
                                                              "files' headers); beyond it requests wait, then 503"),
          gallery: Optional[Path] = typer.Option(None, help="a manifest whose rows POST /search looks through "
                                                            "(a model with a matching task)"),
          device: str = DEVICE):
    """Serve a run over HTTP: POST /predict, /predict/batch, /embed, /search, GET /health, /metadata, /docs,
    and a web page at /."""
    from mmfit import api
    from mmfit.deploy.server import ServeOptions

    opts = ServeOptions(max_batch=max_batch, max_wait_ms=max_wait_ms, timeout_s=timeout, max_body_mb=max_body_mb,
                        max_inflight_mb=max_inflight_mb)
    api.serve(run, backend, host, port, opts, threads, console=console, gallery=gallery, device=device)


@app.command()
def leaderboard(run: Path, output: Optional[Path] = typer.Option(None, "-o", "--output", help="also write it as CSV")):
    """Every candidate a run weighed: validation scores, ensemble weight, what it was trained on."""
    from mmfit import api

    api.leaderboard(run, output, console=console)


@app.command()
def report(run: Path, output: Optional[Path] = typer.Option(None, "-o", "--output", help="default: RUN/report.html")):
    """Write a self-contained HTML report: curves, confusion, per-class F1, calibration, ablation, model card."""
    from mmfit import api

    api.report(run, output, console=console)


@app.command("augment-preview")
def augment_preview(config: Path, overrides: Optional[List[str]] = typer.Argument(None),
                    output: Path = typer.Option(Path("augment-preview.png"), "-o", "--output"),
                    n: int = typer.Option(6, help="rows to show"), seed: int = typer.Option(0)):
    """Draw original and augmented images and log-mel spectrograms; print augmented texts."""
    from mmfit import api

    api.augment_preview(config, output, overrides or [], n=n, seed=seed, console=console)


def main() -> None:
    import os

    from mmfit.config import ConfigError

    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY"):  # the command's own process
        os.environ.setdefault(key, "1")
    from mmfit.data.errors import DataError

    try:
        app()
    except (ConfigError, DataError, FileNotFoundError, FileExistsError, ValueError, ImportError) as e:
        # user-facing problems (bad config, bad data, missing extra): a message, not a traceback
        console.print(f"[red]error:[/red] {_esc(e)}")
        raise SystemExit(2)


def _esc(e: Exception) -> str:
    from rich.markup import escape

    return escape(str(e))


if __name__ == "__main__":
    main()
