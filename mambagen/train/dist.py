"""torch.distributed set-up for `torchrun`, and wrapping models from outside (DDP / FSDP)."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def init_distributed(device: str | None = None) -> DistInfo:
    """Read torchrun's environment; one process without it. NCCL on CUDA, gloo on CPU."""
    from ..device import resolve_device
    want_cuda = resolve_device(device).type == "cuda"
    if "RANK" not in os.environ:
        return DistInfo(device=resolve_device(device))
    rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
    if want_cuda:
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if want_cuda else "gloo", rank=rank, world_size=world,
                                device_id=dev if want_cuda else None)
    return DistInfo(rank, world, local, dev)


def wrap_model(model: nn.Module, info: DistInfo, strategy: str = "ddp") -> nn.Module:
    """DDP, or FSDP2 (`fully_shard` per block, then the root) for the large sizes."""
    if not info.enabled:
        return model
    if strategy == "ddp":
        ids = [info.device.index] if info.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)
    if strategy == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard
        # the mesh on the device this run trains on (its default is CUDA whenever a GPU is visible, even for
        # a CPU run under gloo)
        mesh = init_device_mesh(info.device.type, (info.world,))
        for block in getattr(model, "blocks", []):
            fully_shard(block, mesh=mesh)
        fully_shard(model, mesh=mesh)
        return model
    raise ValueError(f"unknown distributed strategy {strategy!r} (ddp or fsdp)")


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def full_state_dicts(model: nn.Module, optimizer):
    """(model state, optimizer state) as full, unsharded CPU dicts keyed by parameter names.

    The same layout whatever the strategy (single process, DDP, FSDP), so a checkpoint
    written by 8 FSDP ranks resumes on one GPU and the other way round.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict
    return get_state_dict(unwrap(model), optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_full_state_dicts(model: nn.Module, optimizer, model_state, optim_state) -> None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict
    set_state_dict(unwrap(model), optimizer, model_state_dict=model_state, optim_state_dict=optim_state,
                   options=StateDictOptions(full_state_dict=True))


def all_reduce_mean(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        x = x.clone()
        dist.all_reduce(x)
        x /= info.world
    return x


def any_rank(flag: bool, info: DistInfo) -> bool:
    """True on every rank when it is true on any (a stop signal reaches each rank at its own time)."""
    if not info.enabled:
        return bool(flag)
    x = torch.tensor(float(flag), device=info.device)
    dist.all_reduce(x, op=dist.ReduceOp.MAX)
    return bool(x.item())


def on_main(fn, info: DistInfo):
    """Run fn() on rank 0 only (claiming the run folder); a ValueError there is raised on every rank, so
    no rank is left waiting in a collective the others never reach."""
    result, error = None, None
    if info.main:
        try:
            result = fn()
        except ValueError as e:
            error = str(e)
    if info.enabled:
        box = [error]
        dist.broadcast_object_list(box, src=0)
        error = box[0]
    if error is not None:
        raise ValueError(error)
    return result


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
