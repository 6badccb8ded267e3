"""Distributed training on CPU: two gloo processes (``torch.multiprocessing.spawn``) against one.

* :class:`~gigacount_lib.distributed.CPUSyncBatchNorm` on two ranks, each with part of a batch,
  gives the outputs, input and weight gradients and running statistics of one plain BatchNorm on
  the whole batch (float64), and calls no collective in eval mode;
* the real :class:`~gigacount_lib.train.Trainer` under DDP on two ranks (tiny ``cpu-quick``) completes,
  writes its files from rank 0 only, destroys its process group, and its first step matches one
  process on the same global batch (loss terms, gradient norm), as do the weights after the epoch.

Each worker raises on a mismatch; ``mp.spawn`` re-raises it here with the worker's traceback.
"""
from __future__ import annotations

import json
import os
import socket
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from gigacount_lib.config import get_preset
from gigacount_lib.distributed import CPUSyncBatchNorm, convert_sync_batchnorm
from gigacount_lib.train import Trainer

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed with gloo is needed")

WORLD = 2


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def spawn(worker, *args) -> None:
    """Run ``worker(rank, port, *args)`` on ``WORLD`` processes (torchrun's variables set for each)."""
    mp.spawn(worker, args=(free_port(), *args), nprocs=WORLD, join=True)


def _join(rank: int, port: int) -> None:
    """What torchrun sets for a worker; one thread each (the machine has 2 cores). A collective that
    one rank alone reaches fails after 3 minutes instead of hanging for the default hour."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(WORLD), RANK=str(rank),
                      LOCAL_RANK=str(rank), GIGACOUNT_DIST_TIMEOUT_MIN="3")
    torch.set_num_threads(1)


# ------------------------------------------------------------------------------------------ BatchNorm
def _check_close(actual, expected, what: str) -> None:
    torch.testing.assert_close(actual, expected, rtol=1e-7, atol=1e-9, msg=lambda m: f"{what}: {m}")


def _syncbn_worker(rank: int, port: int) -> None:
    _join(rank, port)
    from gigacount_lib.distributed import init_distributed

    assert init_distributed("cpu")
    try:
        # (plain BatchNorm, input shape of the whole batch, samples of rank 0): BatchNorm2d split in
        # halves, and the ODConv attention's BatchNorm1d on (B, C) with a cumulative average
        # (momentum None) and an uneven split
        cases = [(torch.nn.BatchNorm2d(3), (6, 3, 5, 4), 3),
                 (torch.nn.BatchNorm1d(4, momentum=None), (7, 4), 2)]
        for plain, shape, first in cases:
            torch.manual_seed(0)  # the same tensors on both ranks
            plain = plain.double()
            with torch.no_grad():
                plain.weight.uniform_(0.5, 1.5)
                plain.bias.uniform_(-0.5, 0.5)
            synced = convert_sync_batchnorm(type(plain)(plain.num_features, momentum=plain.momentum).double())
            assert isinstance(synced, CPUSyncBatchNorm)
            synced.load_state_dict(plain.state_dict())
            assert list(synced.state_dict()) == list(plain.state_dict())
            mine = slice(0, first) if rank == 0 else slice(first, shape[0])
            for step in range(2):
                full = (torch.randn(shape, dtype=torch.float64) * 2 + 3).requires_grad_()
                upstream = torch.randn(shape, dtype=torch.float64)
                expected = plain(full)
                (expected * upstream).sum().backward()
                part = full.detach()[mine].clone().requires_grad_()
                out = synced(part)
                (out * upstream[mine]).sum().backward()  # the ranks' losses add up to the full-batch loss
                where = f"{type(plain).__name__} step {step} rank {rank}"
                _check_close(out, expected[mine], f"{where}: output")
                _check_close(part.grad, full.grad[mine], f"{where}: input gradient")
                for name in ("weight", "bias"):
                    grad = getattr(synced, name).grad.clone()
                    dist.all_reduce(grad)  # each rank holds its samples' share of the weight gradient
                    _check_close(grad, getattr(plain, name).grad, f"{where}: {name} gradient")
                for name in ("running_mean", "running_var"):
                    _check_close(getattr(synced, name), getattr(plain, name), f"{where}: {name}")
                assert int(synced.num_batches_tracked) == int(plain.num_batches_tracked) == step + 1
                plain.zero_grad()
                synced.zero_grad()
            full = torch.randn(shape, dtype=torch.float64) - 1
            # eval mode is the plain BatchNorm and calls no collective (rank 0 alone evaluates)
            synced.load_state_dict(plain.state_dict())  # bit-identical statistics, for torch.equal
            synced.eval()
            plain.eval()
            if rank == 0:
                def refuse(*args, **kwargs):
                    raise AssertionError("a collective was called in eval mode")

                real, dist.all_reduce = dist.all_reduce, refuse
                try:
                    assert torch.equal(synced(full), plain(full))
                finally:
                    dist.all_reduce = real
            dist.barrier()
    finally:
        dist.destroy_process_group()


def test_all_reduce_batchnorm_matches_one_batchnorm_on_the_whole_batch():
    spawn(_syncbn_worker)


def test_without_a_process_group_it_is_the_plain_batchnorm():
    """One process: the same outputs and statistics as BatchNorm; the state-dict keys unchanged."""
    import copy

    from gigacount_lib.binning import BinConfig
    from gigacount_lib.models import build_model

    torch.manual_seed(0)
    plain = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(2),
                                torch.nn.BatchNorm1d(4))
    synced = convert_sync_batchnorm(copy.deepcopy(plain))
    assert [type(m) for m in synced if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)] == [CPUSyncBatchNorm] * 2
    x = torch.randn(5, 3, 6, 6)
    assert torch.equal(synced(x), plain(x))
    assert all(torch.equal(a, b) for a, b in zip(synced.state_dict().values(), plain.state_dict().values()))
    synced.eval(), plain.eval()
    assert torch.equal(synced(x), plain(x))

    model = build_model("gigacount_atto", BinConfig.gigacount_qnrf(), pretrained=None)
    keys = list(model.state_dict())
    kinds = {type(m).__name__ for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)}
    assert kinds == {"BatchNorm1d", "BatchNorm2d"}  # ODConv's attention and the blocks / decoder
    converted = convert_sync_batchnorm(model)
    assert not any(type(m) in (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d) for m in converted.modules())
    assert list(converted.state_dict()) == keys
    plain_again = build_model("gigacount_atto", BinConfig.gigacount_qnrf(), pretrained=None)
    plain_again.load_state_dict(converted.state_dict())


# ------------------------------------------------------------------------------------------ Trainer
def tiny_ddp_config(batch_size: int):
    """``cpu-quick`` shrunk: 12 training images (3 steps of 4 images), one 64² crop each, one evaluation image.

    Stochastic depth is off (its masks come from each process's RNG). The augmentation is kept: each
    sample's crop is drawn under its own seed of ``(seed, epoch, index)``, the same on any rank.
    The DM-Count OT term is averaged over the images (``ot_reduction="mean"``) instead of the published
    sum: with the sum, each rank sums over *its* images, the logged term (the mean over the ranks) is
    1/WORLD of the full-batch sum and DDP's averaged gradient of that term is 1/WORLD of one process's;
    every other term is a mean over the images, so with the mean the full-batch loss *is* the mean
    over ranks of the per-rank losses, and its gradient DDP's average.
    """
    config = get_preset("cpu-quick")
    return config.override("epochs=1", "eval_every=1", "max_minutes=null", f"data.batch_size={batch_size}",
                           "data.num_crops=1", "data.crop_size=64", "data.val_fraction=0.75",
                           "data.max_eval_images=1", 'model.options={"drop_path_rate": 0.0}',
                           'loss.options={"mode": "reference", "ot_reduction": "mean"}')


def recording_steps(steps: list, poisoned: int | None = None):
    """``Trainer.guarded_step`` that also records each step's stats and image names into ``steps``;
    the batch of step ``poisoned`` gets a NaN pixel (the step is then skipped)."""
    original = Trainer.guarded_step

    def step(self, batch):
        if len(steps) == poisoned:
            batch.images[0, 0, 0, 0] = float("nan")
        stats = original(self, batch)
        steps.append({"names": sorted(m["name"] for m in batch.meta), "stats": stats})
        return stats

    return step


def _record_writes(writes: list) -> None:
    """(In a worker) record every file the library writes atomically (checkpoints, logs, JSON)."""
    import gigacount_lib.checkpoint  # noqa: F401  (imported so that their names can be patched)
    import gigacount_lib.evaluate  # noqa: F401
    import gigacount_lib.train  # noqa: F401
    import gigacount_lib.utils as utils

    original = utils.atomic_write_bytes

    def write(path, data):
        writes.append(str(path))
        return original(path, data)

    for module in list(sys.modules.values()):
        if getattr(module, "__name__", "").startswith("gigacount_lib") and \
                getattr(module, "atomic_write_bytes", None) is original:
            module.atomic_write_bytes = write


def _trainer_worker(rank: int, port: int, config: dict, out_dir: str, result_dir: str) -> None:
    _join(rank, port)
    from gigacount_lib.config import TrainConfig

    steps: list = []
    writes: list = []
    _record_writes(writes)
    Trainer.guarded_step = recording_steps(steps, poisoned=2 if rank == 1 else None)  # rank 1's 3rd batch
    trainer = Trainer(TrainConfig.from_dict(config), out_dir, progress=False)
    summary = trainer.fit()
    result = {"steps": steps, "writes": writes, "summary": summary, "group_left": not dist.is_initialized(),
              "syncbn": sum(isinstance(m, CPUSyncBatchNorm) for m in trainer.raw_model.modules()),
              "ddp": type(trainer.model).__name__}
    with open(os.path.join(result_dir, f"rank{rank}.json"), "w") as handle:
        json.dump(result, handle)


@pytest.mark.slow
def test_two_process_trainer_matches_one_process_on_the_same_global_batch(tmp_path, monkeypatch):
    from gigacount_lib.checkpoint import load_checkpoint

    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    # one process, global batch 4: fills the caches (synthetic data, text prototypes) for the workers
    single_steps: list = []
    monkeypatch.setattr(Trainer, "guarded_step", recording_steps(single_steps, poisoned=2))
    Trainer(tiny_ddp_config(4), tmp_path / "single", progress=False).fit()

    # two processes, 2 images each: the sampler deals one order out as order[rank::2], so the two
    # ranks' k-th batches together are the single process's k-th batch
    results = tmp_path / "results"
    results.mkdir()
    spawn(_trainer_worker, tiny_ddp_config(2).to_dict(), str(tmp_path / "ddp"), str(results))
    ranks = [json.loads((results / f"rank{r}.json").read_text()) for r in range(WORLD)]

    assert all(r["ddp"] == "DistributedDataParallel" and r["syncbn"] > 0 and r["group_left"] for r in ranks)
    assert len(single_steps) == 3 and all(len(r["steps"]) == 3 for r in ranks)
    # the third batch has a NaN pixel on rank 1 only: both ranks skip it (had rank 1 alone skipped,
    # rank 0's next collective would have waited for it), as one process skips its batch
    assert single_steps[2]["stats"] is None and [r["steps"][2]["stats"] for r in ranks] == [None, None]
    for k in range(3):
        union = sorted(name for r in ranks for name in r["steps"][k]["names"])
        assert union == single_steps[k]["names"], f"step {k}: the ranks' batches are not the single batch"
    one, two = single_steps[0]["stats"], ranks[0]["steps"][0]["stats"]
    assert ranks[1]["steps"][0]["stats"] == two  # the logged terms are reduced over the ranks
    assert one.keys() == two.keys()
    # the first step: every loss term (each a mean over the images) and the gradient norm (DDP's
    # average of the ranks' gradients, SyncBatchNorm's backward included, is the full-batch gradient).
    # float32 sums in other orders (batches of 2, one thread) differ from one process by ~1e-7 relative.
    # dm_ot is DM-Count's surrogate <s, stopgrad(dOT/ds)>, zero by construction up to rounding (only its
    # gradient matters; dm_ot_objective is the OT value): it is compared in absolute terms.
    for key in one:
        assert two[key] == pytest.approx(one[key], rel=1e-5, abs=1e-4 if key == "dm_ot" else 1e-6), key
    # the second step follows one AdamW step on each side: the loss terms again (at random init the
    # first step's density is ~0, so its OT and TV terms are 0: the second step checks those). Its
    # gradient norm is not compared: AdamW's first step amplifies rounding (see the weights below).
    one, two = single_steps[1]["stats"], ranks[0]["steps"][1]["stats"]
    for key in one.keys() - {"grad_norm"}:
        assert two[key] == pytest.approx(one[key], rel=1e-4, abs=1e-4 if key == "dm_ot" else 1e-5), key

    # rank 0 alone wrote the run folder, each file once; rank 1 wrote nothing there
    ddp = tmp_path / "ddp"
    in_run = [[p for p in r["writes"] if p.startswith(str(ddp))] for r in ranks]
    assert in_run[1] == []
    names = sorted(os.path.relpath(p, ddp) for p in in_run[0])
    assert names == sorted(set(names)) and {"last.pt", "best_mae.pt", "log.csv", "summary.json",
                                              "config.json", "run.json"} <= set(names)
    assert ranks[1]["summary"] == ranks[0]["summary"] and "test" in ranks[0]["summary"]
    assert json.loads((ddp / "run.json").read_text())["world_size"] == WORLD
    assert len((ddp / "log.csv").read_text().splitlines()) == 2  # header + one epoch
    assert ranks[0]["summary"]["global_step"] == 2

    # the weights after the epoch: the BatchNorm statistics (made in the forward passes) match; of the
    # parameters almost all do. AdamW's first steps move each element by about lr * g / |g|, so an element
    # whose gradient is near zero (float rounding of other reduction orders decides its sign) can move
    # by up to lr (1e-3) either way: a fraction of a percent of them do.
    a, b = load_checkpoint(tmp_path / "single" / "last.pt")["model"], load_checkpoint(ddp / "last.pt")["model"]
    assert a.keys() == b.keys()
    moved = total = 0
    for key in a:
        if key.endswith(("running_mean", "running_var", "num_batches_tracked")):
            torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-6, msg=lambda m: f"{key}: {m}")
        elif a[key].is_floating_point():
            moved += int(((b[key] - a[key]).abs() > 1e-5).sum())
            total += a[key].numel()
    assert moved < 0.01 * total, f"{moved} of {total} parameter elements differ by more than 1e-5"
