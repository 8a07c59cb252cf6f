"""Training on a Ray cluster: `mmfit train CONFIG --backend ray --workers N`.

Ray Train's TorchTrainer starts N workers (one CPU share or one GPU each) and joins them in one
torch.distributed process group; each runs the ordinary training loop (training/loop.py), which
sees that group as it sees torchrun's: every rank decodes its share of the data into the cache (a
cache folder shared by the machines saves each the others' shares) and then takes its share of
each global batch, gradients are averaged (DDP, or FSDP with train.strategy: fsdp), only rank 0
writes the run directory, which is the same as a one-process run's (checkpoints included). When a worker dies, Ray restarts the
group (up to `max_failures` times) and the loop resumes the run from its last checkpoint. The run
directory and the data must be at the same paths on every machine.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

from mmfit.cluster.engine import connect


def _worker(args: dict) -> None:
    """One Ray Train worker: the process group is up; the loop reads it from the environment."""
    import ray.train
    from rich.console import Console

    from mmfit.config import load_config
    from mmfit.run.store import Run
    from mmfit.training.loop import train

    ctx = ray.train.get_context()
    os.environ.update(RANK=str(ctx.get_world_rank()), WORLD_SIZE=str(ctx.get_world_size()),
                      LOCAL_RANK=str(ctx.get_local_rank()))
    console = Console(quiet=ctx.get_world_rank() != 0)
    run = Path(args["run_dir"])
    if Run(run).has_checkpoint():  # a restart after a worker died: go on from there
        train(resume=run, console=console)
    else:
        train(load_config(args["config"], args["overrides"]), run_dir=run, console=console)


def train_on_ray(config: Union[str, Path, dict], overrides, run_dir: Optional[Union[str, Path]],
                 workers: int, device: str = "auto", address: Optional[str] = None, max_failures: int = 2,
                 console=None) -> Path:
    """Train `config` in `workers` Ray Train workers on the cluster at `address` (or $RAY_ADDRESS, else
    a local one); -> the run directory (named once, here, for every worker)."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from mmfit.config import load_config
    from mmfit.run.store import new_run_dir

    ray = connect(address)
    cfg = load_config(config, overrides)
    run = Path(run_dir) if run_dir else new_run_dir(cfg)
    run = run.resolve()
    gpus = int(ray.cluster_resources().get("GPU", 0))
    use_gpu = device.startswith("cuda") or (device == "auto" and gpus >= workers)
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)) // workers)
    if console is not None:
        console.print(f"starting {workers} Ray Train worker(s) ({'a GPU' if use_gpu else f'{cpus} CPU(s)'} each): "
                      f"run directory {run}")
    raw = config if isinstance(config, dict) else str(config)
    trainer = TorchTrainer(
        _worker, train_loop_config={"config": raw, "overrides": overrides, "run_dir": str(run)},
        torch_config=TorchConfig(timeout_s=int(cfg.train.dist_timeout)),
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu,
                                     resources_per_worker=None if use_gpu else {"CPU": cpus}),
        run_config=RunConfig(name=f"mmfit-{run.name}", failure_config=FailureConfig(max_failures=max_failures)))
    trainer.fit()
    return run
