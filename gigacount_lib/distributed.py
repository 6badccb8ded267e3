"""Distributed helpers: the process group from torchrun's environment, rank-0 helpers, and a
synchronised BatchNorm that also runs on CPU (gloo).

``torchrun --nproc_per_node N ...`` starts N processes and sets ``WORLD_SIZE``, ``RANK`` and
``LOCAL_RANK`` (with ``MASTER_ADDR``/``MASTER_PORT`` or a rendezvous endpoint)::

    created = init_distributed("cuda")        # nccl on CUDA, gloo on CPU; False when WORLD_SIZE <= 1
    model = convert_sync_batchnorm(model)     # before wrapping in DistributedDataParallel
    ...
    terms = all_reduce_mean(terms)            # logged loss terms, averaged over the ranks
    if is_main():
        ...                                   # evaluation, checkpoints, logs
    barrier()
    if created:
        destroy_distributed()

Every helper is a no-op (or returns its input) when no process group is running, so the same code
runs in one process.

**Synchronised BatchNorm.** torch's :class:`torch.nn.SyncBatchNorm` refuses CPU tensors, so on CPU
:func:`convert_sync_batchnorm` uses :class:`CPUSyncBatchNorm`: in training mode it gathers each rank's
per-channel count, mean and sum of squared deviations with an autograd-aware all-gather (as
``torch.distributed.nn.functional.all_gather``, deprecated in torch 2.14, does: the backward pass
all-reduces the gradients of the statistics), combines them exactly, normalises with the global mean
and biased variance, and updates the running statistics with the global unbiased variance, as
:class:`torch.nn.BatchNorm2d` would on the whole batch. In eval mode, or without a process group of
more than one rank, it *is* the plain BatchNorm (no collective is called), so evaluation on rank 0
alone is safe. Its state-dict keys are those of the plain BatchNorm, so checkpoints load into an
unconverted model.
"""
from __future__ import annotations

import contextlib
import datetime
import os
from typing import Iterator

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from .utils import module_device

__all__ = ["env_world", "init_distributed", "destroy_distributed", "is_distributed", "get_rank",
           "get_world_size", "is_main", "barrier", "all_reduce_mean", "any_rank", "all_ranks",
           "broadcast_object", "local_main_first", "CPUSyncBatchNorm", "convert_sync_batchnorm"]

#: Collective time-out (minutes) unless ``$GIGACOUNT_DIST_TIMEOUT_MIN`` says otherwise: long enough for
#: rank 0's evaluation while the other ranks wait in their next collective.
DEFAULT_TIMEOUT_MIN = 60.0

#: Devices torch's own SyncBatchNorm accepts; elsewhere (CPU) :class:`CPUSyncBatchNorm` is used.
_TORCH_SYNCBN_DEVICES = ("cuda", "hpu", "xpu")


# ---------------------------------------------------------------------------------------- process group
def env_world() -> tuple[int, int, int]:
    """``(world_size, rank, local_rank)`` from torchrun's ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK`` (1, 0, 0 unset)."""
    return (int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0")),
            int(os.environ.get("LOCAL_RANK", "0")))


def init_distributed(device_type: str = "cpu", *, backend: str | None = None,
                     timeout_minutes: float | None = None) -> bool:
    """Join the process group torchrun describes; returns True when this call created it.

    Nothing happens (False) when ``WORLD_SIZE`` is 1 or unset, or when a group already exists.
    ``backend``: default ``nccl`` for ``device_type="cuda"``, ``gloo`` otherwise. The time-out of the
    collectives is ``timeout_minutes``, else ``$GIGACOUNT_DIST_TIMEOUT_MIN``, else 60 minutes.
    """
    import torch.distributed as dist

    world_size, rank, local_rank = env_world()
    if world_size <= 1 or (dist.is_available() and dist.is_initialized()):
        return False
    if not dist.is_available():
        raise RuntimeError(f"WORLD_SIZE={world_size} but this torch build has no torch.distributed")
    if backend is None:
        backend = "nccl" if device_type == "cuda" else "gloo"
    if timeout_minutes is None:
        timeout_minutes = float(os.environ.get("GIGACOUNT_DIST_TIMEOUT_MIN", DEFAULT_TIMEOUT_MIN))
    kwargs = {}
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
        kwargs["device_id"] = torch.device("cuda", local_rank)
    dist.init_process_group(backend, rank=rank, world_size=world_size,
                            timeout=datetime.timedelta(minutes=timeout_minutes), **kwargs)
    return True


def destroy_distributed() -> None:
    """Leave and destroy the default process group (no-op without one)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_distributed() -> bool:
    """A process group of more than one rank is running."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    """Rank 0 (or no process group): the process that evaluates, logs and writes checkpoints."""
    return get_rank() == 0


def _collective_device() -> torch.device:
    """Where tensors handed to a collective must live: the current CUDA device for nccl, else CPU."""
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def barrier() -> None:
    """Wait for every rank (no-op without a process group of more than one rank)."""
    import torch.distributed as dist

    if not is_distributed():
        return
    if dist.get_backend() == "nccl":
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


def all_reduce_mean(values: dict[str, float]) -> dict[str, float]:
    """The mean over the ranks of each value of ``values`` (every rank passes the same keys).

    One float64 all-reduce for the whole dict (keys in sorted order); without a process group the
    values come back unchanged (as floats).
    """
    import torch.distributed as dist

    if not is_distributed():
        return {k: float(v) for k, v in values.items()}
    keys = sorted(values)
    tensor = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=_collective_device())
    dist.all_reduce(tensor)
    world = dist.get_world_size()
    return {k: v / world for k, v in zip(keys, tensor.tolist())}


def _reduce_flags(flags: tuple[bool, ...], op) -> tuple[bool, ...]:
    import torch.distributed as dist

    if not is_distributed():
        return tuple(bool(f) for f in flags)
    tensor = torch.tensor([1.0 if f else 0.0 for f in flags], device=_collective_device())
    dist.all_reduce(tensor, op=op)
    return tuple(bool(v > 0) for v in tensor.tolist())


def any_rank(*flags: bool) -> tuple[bool, ...]:
    """For each flag: is it true on at least one rank? (one all-reduce; every rank must call it)."""
    import torch.distributed as dist

    return _reduce_flags(flags, dist.ReduceOp.MAX)


def all_ranks(*flags: bool) -> tuple[bool, ...]:
    """For each flag: is it true on every rank? (one all-reduce; every rank must call it)."""
    import torch.distributed as dist

    return _reduce_flags(flags, dist.ReduceOp.MIN)


def broadcast_object(obj, src: int = 0):
    """Rank ``src``'s ``obj`` (picklable) on every rank; ``obj`` itself without a process group."""
    import torch.distributed as dist

    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, device=_collective_device())
    return box[0]


@contextlib.contextmanager
def local_main_first(local_rank: int | None = None) -> Iterator[None]:
    """Run the block on each node's local rank 0 first, then on the node's other ranks.

    For work that fills a cache on disk (the synthetic dataset, the preprocessing cache, the text
    prototypes): the other ranks then find it ready instead of building it at the same time. Every
    rank passes one barrier. ``local_rank`` defaults to ``$LOCAL_RANK``.
    """
    if local_rank is None:
        local_rank = env_world()[2]
    if local_rank != 0:
        barrier()
    try:
        yield
    finally:
        if local_rank == 0:
            barrier()


# ---------------------------------------------------------------------------------------- BatchNorm
class _AllGather(torch.autograd.Function):
    """``(world, *shape)``: every rank's ``tensor``, stacked in rank order; the backward pass sums the
    gradients of this rank's row over the ranks (each rank's row feeds every rank's output). torch's
    ``torch.distributed.nn.functional.all_gather`` does the same, but torch 2.14 deprecates it in
    favour of a private module; the few lines are kept here instead."""

    @staticmethod
    def forward(ctx, tensor: Tensor, group) -> Tensor:
        import torch.distributed as dist

        ctx.group, ctx.rank = group, dist.get_rank(group)
        tensor = tensor.contiguous()
        rows = [torch.empty_like(tensor) for _ in range(dist.get_world_size(group))]
        dist.all_gather(rows, tensor, group=group)
        return torch.stack(rows)

    @staticmethod
    def backward(ctx, grad: Tensor):
        import torch.distributed as dist

        grad = grad.contiguous().clone()
        dist.all_reduce(grad, group=ctx.group)
        return grad[ctx.rank], None


class CPUSyncBatchNorm(_BatchNorm):
    """BatchNorm whose training-mode statistics are computed over all ranks; runs on CPU (gloo).

    A drop-in for :class:`torch.nn.BatchNorm1d` / ``BatchNorm2d`` / ``BatchNorm3d`` (input
    ``(N, C, *)``, at least 2-D), with the same parameters, buffers and state-dict keys. In training
    mode with a process group of more than one rank it normalises with the mean and the biased
    variance of the union of the ranks' batches and updates ``running_mean`` / ``running_var``
    (unbiased, over the global count) / ``num_batches_tracked`` exactly as the plain BatchNorm would
    on that union. Each rank's count, mean and sum of squared deviations are gathered with an
    autograd-aware all-gather (whose backward pass all-reduces the gradients of the statistics) and
    combined exactly, so each rank's input gradient is that of the summed loss of all ranks (which
    DistributedDataParallel then averages). The statistics are computed in float32 at least (float64
    for float64 input). Per-rank sums and sums of squares (``E[x^2] - E[x]^2``) are not used:
    ODConv's attention normalises pooled vectors whose spread over the batch is small against their
    mean, and in float32 that cancellation moved the gradient norm of a GigaCount step by ~1e-3.
    In eval mode, or without such a process group, :meth:`forward` is the plain BatchNorm's.

    Build it with :func:`convert_sync_batchnorm` (or :meth:`convert`) from a model's BatchNorms.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, process_group=None, device=None, dtype=None) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device=device, dtype=dtype)
        self.process_group = process_group

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def _group_size(self) -> int:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return 1
        return dist.get_world_size(self.process_group or dist.group.WORLD)

    def forward(self, input: Tensor) -> Tensor:
        if not self.training or self._group_size() <= 1:
            return super().forward(input)  # the plain BatchNorm: no collective
        self._check_input_dim(input)
        from torch.distributed import group

        factor = 0.0 if self.momentum is None else self.momentum
        if self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum

        channels = input.shape[1]
        dims = [0, *range(2, input.dim())]
        shape = [1, channels] + [1] * (input.dim() - 2)
        x = input.to(torch.promote_types(input.dtype, torch.float32))
        # this rank's count, mean and sum of squared deviations (two passes over the local data) ...
        n_local = x.numel() // max(channels, 1)
        local_mean = x.sum(dims) / max(n_local, 1)
        local_m2 = (x - local_mean.view(shape)).square().sum(dims)
        local = torch.cat([x.new_full((1,), float(n_local)), local_mean, local_m2])
        rows = _AllGather.apply(local, self.process_group or group.WORLD)  # (world, 1 + 2C)
        counts, means, m2s = rows[:, :1], rows[:, 1:1 + channels], rows[:, 1 + channels:]
        count = float(counts.detach().sum())
        if count <= 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got input size "
                             f"{list(input.shape)} (over all ranks: {int(count)} value(s) per channel)")
        # ... combined exactly (Chan et al.): no E[x^2] - E[x]^2 cancellation
        mean = (counts * means).sum(0) / count
        var = (m2s.sum(0) + (counts * (means - mean).square()).sum(0)) / count  # biased, for normalising
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                unbiased = var.detach() * (count / (count - 1))
                self.running_mean.mul_(1 - factor).add_(mean.detach().to(self.running_mean.dtype), alpha=factor)
                self.running_var.mul_(1 - factor).add_(unbiased.to(self.running_var.dtype), alpha=factor)
        y = (x - mean.view(shape)) * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(input.dtype)

    @classmethod
    def convert(cls, module: nn.Module, process_group=None) -> nn.Module:
        """``module`` with every BatchNorm (1d/2d/3d; not already synchronised) replaced by this class,
        sharing its parameters and buffers (torch's ``SyncBatchNorm.convert_sync_batchnorm``, for CPU)."""
        out = module
        if isinstance(module, _BatchNorm) and not isinstance(module, (cls, nn.SyncBatchNorm)):
            out = cls(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats,
                      process_group)
            if module.affine:
                with torch.no_grad():
                    out.weight = module.weight
                    out.bias = module.bias
            out.running_mean = module.running_mean
            out.running_var = module.running_var
            out.num_batches_tracked = module.num_batches_tracked
            out.training = module.training
            if hasattr(module, "qconfig"):
                out.qconfig = module.qconfig
        for name, child in module.named_children():
            out.add_module(name, cls.convert(child, process_group))
        return out


def convert_sync_batchnorm(module: nn.Module, process_group=None, *,
                           device: torch.device | str | None = None) -> nn.Module:
    """Replace ``module``'s BatchNorms by synchronised ones; returns the converted module.

    On CUDA (and torch's other accelerators) this is ``nn.SyncBatchNorm.convert_sync_batchnorm``;
    on CPU, :class:`CPUSyncBatchNorm`. ``device`` defaults to where ``module``'s first parameter
    lives. The parameters and buffers are shared with the original BatchNorms and the state-dict
    keys do not change.
    """
    device = torch.device(device) if device is not None else module_device(module)
    if device.type in _TORCH_SYNCBN_DEVICES:
        return nn.SyncBatchNorm.convert_sync_batchnorm(module, process_group)
    return CPUSyncBatchNorm.convert(module, process_group)
