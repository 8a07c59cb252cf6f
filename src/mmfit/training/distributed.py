"""Data-parallel training across processes and machines through torchrun (DistributedDataParallel).

`mmfit train cfg.yaml --nproc N` starts N processes with `torch.distributed.run`; several machines
join with `--nnodes M --node-rank R --master-addr HOST --master-port PORT` (torchrun's static
rendezvous), or run `torchrun ... -m mmfit.cli train cfg.yaml` directly. Inside `train()`:
gloo on CPU, nccl on GPUs (one per process); every rank takes its share of each global batch
(`train.batch_size` stays the global batch, so a 2-process run steps like a 1-process one);
gradients are averaged by DDP; training loss terms are averaged across ranks; the validation
value is decided on rank 0 and broadcast, so early stopping happens once for all; only rank 0
writes the run directory.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.distributed as dist


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    device: Optional[torch.device] = None

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device_name: str) -> "Dist":
        """Join the process group torchrun describes (WORLD_SIZE > 1), else a single process."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls(0, 1, None)
        use_cuda = torch.cuda.is_available() and device_name in ("auto", "cuda")
        if not dist.is_initialized():
            dist.init_process_group("nccl" if use_cuda else "gloo")
        local = int(os.environ.get("LOCAL_RANK", "0"))
        device = torch.device("cuda", local) if use_cuda else torch.device("cpu")
        if use_cuda:
            torch.cuda.set_device(device)
        return cls(dist.get_rank(), dist.get_world_size(), device)

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's value, on every rank."""
        if self.world == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        if self.world == 1 or not values:
            return values
        keys = sorted(values)
        t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
        dist.all_reduce(t)
        return {k: float(v) / self.world for k, v in zip(keys, t.tolist())}

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """DDP around the model (unused parameters allowed: absent modalities skip their encoders'
        heads in some steps); the model itself when there is one process."""
        if self.world == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [self.device.index] if self.device is not None and self.device.type == "cuda" else None
        return DDP(model, device_ids=ids, find_unused_parameters=True)

    def close(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.barrier()  # gloo can abort at exit without it
            dist.destroy_process_group()


def launch(train_args: list[str], nproc: int, nnodes: int = 1, node_rank: int = 0,
           master_addr: Optional[str] = None, master_port: int = 29500) -> int:
    """`mmfit train ... --nproc N`: run `mmfit train` in N processes per machine under torchrun."""
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}"]
    if nnodes > 1:
        if not master_addr:
            raise ValueError("--nnodes > 1 needs --master-addr (the host of node 0) and the same --master-port "
                             "on every node")
        cmd += [f"--nnodes={nnodes}", f"--node_rank={node_rank}", f"--master_addr={master_addr}",
                f"--master_port={master_port}"]
    else:
        cmd += ["--standalone"]
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    return subprocess.call(cmd + ["-m", "mmfit.cli", "train", *train_args], env=env)
