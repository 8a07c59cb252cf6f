"""Data-parallel training across processes and machines through torchrun (DistributedDataParallel).

`mmfit train cfg.yaml --nproc N` starts N processes with `torch.distributed.run`; several machines
join with `--nnodes M --node-rank R --master-addr HOST --master-port PORT` (torchrun's static
rendezvous), or run `torchrun ... -m mmfit.cli train cfg.yaml` directly. Inside `train()`:
gloo on CPU, nccl on GPUs (one per process); every rank takes its share of each global batch
(`train.batch_size` stays the global batch, so a 2-process run steps like a 1-process one);
gradients are averaged by DDP; training loss terms are averaged across ranks; the validation
value is decided on rank 0 and broadcast, so early stopping happens once for all; only rank 0
writes the run directory.

`train.strategy: fsdp` shards instead of replicating (FSDP2, `torch.distributed.fsdp.fully_shard`):
each block of an encoder's layer list, each encoder and the rest of the model hold 1/N of
their parameters, gradients and optimiser state per process, for encoders too large for one
device. Checkpoints are gathered into the same full safetensors files as a 1-process run
(weights and optimiser state), so a sharded run resumes, evaluates, exports and serves like
any other.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.distributed as dist

from mmfit.run.files import model_state


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    device: Optional[torch.device] = None
    sharded: bool = False  # FSDP: parameters are DTensors, state dicts are gathered collectively

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device_name: str, timeout: float = 1800.0) -> "Dist":
        """Join the process group torchrun describes (WORLD_SIZE > 1), else a single process; a rank
        waits `timeout` seconds at most for the others (Ray Train's group is joined with its own)."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls(0, 1, None)
        use_cuda = torch.cuda.is_available() and device_name in ("auto", "cuda")
        if not dist.is_initialized():
            from datetime import timedelta

            dist.init_process_group("nccl" if use_cuda else "gloo", timeout=timedelta(seconds=float(timeout)))
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

    def gather(self, obj: Any) -> list:
        """Every rank's `obj`, in rank order, on every rank."""
        if self.world == 1:
            return [obj]
        out: list = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        if self.world == 1 or not values:
            return values
        keys = sorted(values)
        t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
        dist.all_reduce(t)
        return {k: float(v) / self.world for k, v in zip(keys, t.tolist())}

    def wrap(self, model: torch.nn.Module, strategy: str = "ddp") -> torch.nn.Module:
        """DDP around the model (unused parameters allowed: absent modalities skip their encoders'
        heads in some steps), or FSDP shards of it; the model itself when there is one process."""
        if self.world == 1:
            return model
        if strategy == "fsdp":
            from torch.distributed.fsdp import fully_shard

            for enc in model.encoders.values():
                lists: list[str] = []  # the outermost layer lists: their blocks are the shard units
                for name, mod in enc.named_modules():
                    if isinstance(mod, torch.nn.ModuleList) and len(mod) > 1 and not any(
                            name.startswith(f"{n}.") for n in lists):
                        lists.append(name)
                        for block in mod:
                            if any(p.requires_grad for p in block.parameters()):
                                fully_shard(block)
                fully_shard(enc)
            fully_shard(model)
            self.sharded = True
            return model
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [self.device.index] if self.device is not None and self.device.type == "cuda" else None
        return DDP(model, device_ids=ids, find_unused_parameters=True)

    # ---- state dicts: full tensors on rank 0, gathered from the shards under FSDP (collective:
    # every rank calls these), the model's own elsewhere
    def model_state(self, model) -> dict:
        if not self.sharded:
            return model_state(model) if self.main else {}
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def optimizer_state(self, model, optimizer) -> dict:
        """torch's own layout ({"state": {index: ...}, "param_groups": [{"params": [index]}]})."""
        if not self.sharded:
            return optimizer.state_dict() if self.main else {}
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        full = get_optimizer_state_dict(model, optimizer,
                                        options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if not self.main:
            return {}
        index = {name: i for i, name in enumerate(_param_names(model, optimizer))}
        return {"state": {index[k]: v for k, v in full["state"].items()},
                "param_groups": [{**g, "params": [index[k] for k in g["params"]]} for g in full["param_groups"]]}

    def load_state(self, model, optimizer, model_sd: dict, optim_sd: dict) -> None:
        """Full state dicts (as `model_state` / `optimizer_state` give them), read on every rank."""
        if not self.sharded:
            model.load_state_dict(model_sd)
            optimizer.load_state_dict(optim_sd)
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

        names = _param_names(model, optimizer)
        fqn = {"state": {names[i]: v for i, v in optim_sd["state"].items()},
               "param_groups": [{**g, "params": [names[i] for i in g["params"]]} for g in optim_sd["param_groups"]]}
        set_state_dict(model, optimizer, model_state_dict=model_sd, optim_state_dict=fqn,
                       options=StateDictOptions(full_state_dict=True))

    def close(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.barrier()  # gloo can abort at exit without it
            dist.destroy_process_group()


def _param_names(model, optimizer) -> list[str]:
    """Parameter names in the optimiser's index order (its groups, in order)."""
    name = {id(p): n for n, p in model.named_parameters()}
    return [name[id(p)] for g in optimizer.param_groups for p in g["params"]]


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
