"""Data-parallel training under `torchrun`: the process group, rank helpers, batch sharding and gradient averaging.

A process started by `torchrun` (or `python -m torch.distributed.run`) finds RANK, WORLD_SIZE and LOCAL_RANK in its
environment; `session(device)` then joins the process group (NCCL for a CUDA device, one GPU per process, chosen by
LOCAL_RANK; gloo on the CPU) and leaves it at the end. Outside torchrun every helper is a no-op: world size 1,
rank 0, `is_main()` true, barriers and broadcasts return at once.

The training loop (`shared.training.fit`) uses the rest. Every rank draws the same batch sequence (same seed) and
keeps its rows of each batch (`shard_batch`: rows rank, rank + world, ...); `shard_weight` scales the rank's loss by
world x (its rows / the batch's rows), so that the mean over ranks of the gradients is the gradient of the whole
batch's loss (exact when the loss is a mean of per-row terms, as every model's loss here is).

Gradients are averaged by `GradientAverager` after `backward()`, not by `torch.nn.parallel.DistributedDataParallel`:
- DDP's reducer is armed by calling the wrapper's `forward()`, and the models here are trained through
  `loss(batch)` / `score(...)` (the scorer contract), which a DDP wrapper does not intercept;
- the embeddings have sparse gradients (`nn.Embedding(sparse=True)`, stepped by `shared.optim.LazyAdam`), which
  NCCL cannot all-reduce.
So the averaging is done directly and the same way on every backend, in at most three collectives a step:
1. an `all_gather` of what each rank holds (which parameters have gradients, how many sparse rows) and its loss;
2. one `all_reduce` of every dense gradient flattened into one buffer (one bucket, as DDP would do);
3. one `all_gather` of every sparse gradient's (row indices, row values), packed into one float32 buffer (the indices
   bit-cast, not converted) padded to the longest; each rank concatenates the ranks' rows in rank order and divides
   the values by the world size. The result is an uncoalesced sparse tensor whose row sums are exactly the summed
   gradients (LazyAdam sums repeated rows).
Every rank ends with the same bytes, so the replicas, started from rank 0's parameters (`broadcast_module`), stay
identical step after step.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

log = logging.getLogger(__name__)

T = TypeVar("T")

# Long enough for rank 0 to run a full-ranking validation (or write a checkpoint) while the others wait for it.
TIMEOUT = datetime.timedelta(minutes=60)


def launched_by_torchrun() -> bool:
    """Whether this process was started by torchrun: RANK, WORLD_SIZE and LOCAL_RANK are all set."""
    return all(name in os.environ for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def is_active() -> bool:
    """Whether this process is one of several in an initialised process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def local_rank() -> int:
    """This process's index on its machine (LOCAL_RANK from torchrun; 0 outside it)."""
    return int(os.environ.get("LOCAL_RANK", "0")) if launched_by_torchrun() else 0


def is_main() -> bool:
    """Rank 0: the process that validates, writes checkpoints and summaries, publishes and prints."""
    return rank() == 0


def backend_for(device: torch.device) -> str:
    """NCCL for CUDA devices, gloo for the CPU."""
    return "nccl" if device.type == "cuda" else "gloo"


def init(device: torch.device | str) -> torch.device:
    """Join the process group when launched by torchrun and return the device this rank trains on (a CUDA device is
    replaced by cuda:LOCAL_RANK, made current); outside torchrun, return `device` unchanged. RuntimeError when a
    rank has no GPU of its own."""
    device = torch.device(device)
    if not launched_by_torchrun() or (dist.is_available() and dist.is_initialized()):
        return device
    if not dist.is_available():
        raise RuntimeError("this torch build has no torch.distributed; run without torchrun")
    if device.type == "cuda":
        index = local_rank()
        if index >= torch.cuda.device_count():
            raise RuntimeError(f"local rank {index} has no GPU of its own ({torch.cuda.device_count()} visible); "
                               "start at most one process per GPU (--nproc-per-node <= the GPU count)")
        torch.cuda.set_device(index)
        device = torch.device("cuda", index)
    kwargs: dict[str, Any] = {"device_id": device} if device.type == "cuda" else {}
    dist.init_process_group(backend_for(device), timeout=TIMEOUT, **kwargs)
    log.info("rank %d of %d (local rank %d) joined the %s process group on %s", rank(), world_size(), local_rank(),
             backend_for(device), device)
    return device


def shutdown() -> None:
    """Leave the process group (a no-op when none was joined)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextmanager
def session(device: torch.device | str) -> Iterator[torch.device]:
    """`init(device)` on entry (the device this rank trains on), `shutdown()` on exit, also after an error."""
    joined_here = launched_by_torchrun() and not (dist.is_available() and dist.is_initialized())
    try:
        yield init(device)
    finally:
        if joined_here:
            shutdown()


def barrier() -> None:
    """Wait until every rank gets here."""
    if is_active():
        dist.barrier()


def broadcast_object(obj: T, src: int = 0) -> T:
    """Rank `src`'s picklable object, on every rank (`obj` is ignored elsewhere)."""
    if not is_active():
        return obj
    box = [obj if rank() == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]  # type: ignore[return-value]


class RankZeroError(RuntimeError):
    """Raised on the other ranks when what rank 0 ran for all of them failed there."""


def on_main(fn: Callable[[], T]) -> T:
    """Run `fn` on rank 0 only and return its result on every rank. When it raises, rank 0 raises that exception
    and every other rank a RankZeroError carrying its message, so no rank waits forever for the others."""
    if not is_active():
        return fn()
    outcome: tuple[bool, Any] = (True, None)
    error: BaseException | None = None
    if is_main():
        try:
            outcome = (True, fn())
        except Exception as exc:
            error, outcome = exc, (False, f"{type(exc).__name__}: {exc}")
    ok, value = broadcast_object(outcome)
    if error is not None:
        raise error
    if not ok:
        raise RankZeroError(f"rank 0 failed: {value}")
    return value


def broadcast_module(module: nn.Module) -> None:
    """Copy rank 0's parameters and buffers into every rank's `module` (replicas that start identical)."""
    if not is_active():
        return
    with torch.no_grad():
        for tensor in module.state_dict().values():
            dist.broadcast(tensor, src=0)


# ------------------------------------------------------------------------------------------------ batches


def shard_batch(batch: Any, index: int, world: int) -> Any:
    """Rank `index`'s rows of a batch: rows index, index + world, ... of every tensor along its first dimension.

    A batch with a `shard(index, world)` method is asked for them; a dataclass, tuple or list is sharded field by
    field (nested batches too; None and non-tensor fields are kept). TypeError for anything else."""
    if hasattr(batch, "shard"):
        return batch.shard(index, world)
    if isinstance(batch, torch.Tensor):
        return batch[index::world]
    if batch is None or isinstance(batch, int | float | str | bool):
        return batch
    if dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        return dataclasses.replace(batch, **{f.name: shard_batch(getattr(batch, f.name), index, world)
                                             for f in dataclasses.fields(batch) if f.init})
    if isinstance(batch, tuple | list):
        parts = [shard_batch(part, index, world) for part in batch]
        return type(batch)(*parts) if hasattr(batch, "_fields") else type(batch)(parts)
    raise TypeError(f"cannot split a {type(batch).__name__} batch across ranks: make it a dataclass (or tuple) of "
                    "tensors whose first dimension is the batch, or give it a shard(rank, world) method")


def batch_rows(batch: Any) -> int:
    """The number of rows of a batch: `len(batch)` when it has one, else the first dimension of its first tensor
    (depth first through dataclass fields, tuples and lists). TypeError when there is none."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() else 1
    if hasattr(batch, "__len__") and not isinstance(batch, tuple | list):
        return len(batch)
    parts: Sequence[Any] = ()
    if dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        parts = [getattr(batch, f.name) for f in dataclasses.fields(batch)]
    elif isinstance(batch, tuple | list):
        parts = batch
    for part in parts:
        if isinstance(part, torch.Tensor) or dataclasses.is_dataclass(part) or isinstance(part, tuple | list):
            try:
                return batch_rows(part)
            except TypeError:
                continue
    raise TypeError(f"a {type(batch).__name__} batch holds no tensor to count its rows by")


def shard_weight(local_rows: int, total_rows: int, world: int) -> float:
    """The factor on a rank's mean loss over `local_rows` of a `total_rows` batch so that the mean over `world`
    ranks of the scaled gradients is the gradient of the mean loss over the whole batch: world * local / total."""
    return world * local_rows / total_rows


# ------------------------------------------------------------------------------------------------ gradients


class GradientAverager:
    """Averages the gradients of `model`'s trainable parameters over the ranks after `backward()` (see the module's
    docstring), with the loss reduced alongside the dense gradients. The weights of embeddings built with
    `sparse=True` are taken to have sparse gradients, every other parameter dense ones. Every rank must call
    `average` once per step, whether its shard was empty (no backward, no gradients) or not."""

    def __init__(self, model: nn.Module) -> None:
        sparse_ids = {
            id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding | nn.EmbeddingBag) and m.sparse
        }
        self.parameters = [p for p in model.parameters() if p.requires_grad]
        self.sparse = [id(p) in sparse_ids for p in self.parameters]

    def average(self, local_loss: torch.Tensor | None, device: torch.device) -> float:
        """Replace every gradient by its mean over the ranks (a parameter no rank has a gradient for keeps None) and
        return the mean over ranks of `local_loss` (None: this rank computed none, counted as 0)."""
        world = world_size()
        for p, sparse in zip(self.parameters, self.sparse, strict=True):
            if p.grad is not None and p.grad.is_sparse != sparse:
                kind = "sparse" if p.grad.is_sparse else "dense"
                raise RuntimeError(f"a parameter of shape {tuple(p.shape)} has a {kind} gradient where its module says "
                                   "otherwise; cannot average it across ranks")
        # per parameter: -1 no gradient, else the number of sparse rows (0 for a dense one); then the loss's bits
        held = [-1 if p.grad is None else (p.grad._nnz() if sparse else 0)
                for p, sparse in zip(self.parameters, self.sparse, strict=True)]
        loss = 0.0 if local_loss is None else float(local_loss.detach())
        meta = torch.cat([torch.tensor(held, dtype=torch.int64),
                          torch.tensor([loss], dtype=torch.float64).view(torch.int64)]).to(device)
        gathered = [torch.empty_like(meta) for _ in range(world)]
        dist.all_gather(gathered, meta)
        table = torch.stack(gathered).cpu()  # [world, n_params + 1]
        held_by, losses = table[:, :-1], table[:, -1].contiguous().view(torch.float64)
        used = (held_by >= 0).any(0).tolist()
        self._average_dense([i for i, u in enumerate(used) if u and not self.sparse[i]], world)
        self._average_sparse([i for i, u in enumerate(used) if u and self.sparse[i]], held_by, world, device)
        return float(losses.sum()) / world

    def _average_dense(self, ids: list[int], world: int) -> None:
        if not ids:
            return
        buffer = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float()
                            for p in (self.parameters[i] for i in ids)])
        dist.all_reduce(buffer)
        offset = 0
        for i in ids:
            p = self.parameters[i]
            n = p.numel()
            p.grad = buffer[offset : offset + n].reshape(p.shape).to(p.dtype).div_(world)
            offset += n

    def _average_sparse(self, ids: list[int], held_by: torch.Tensor, world: int, device: torch.device) -> None:
        if not ids:
            return
        rows = held_by[:, ids].clamp_min(0)  # [world, n_sparse]: rows each rank holds, per parameter
        widths = torch.tensor([self.parameters[i][0].numel() for i in ids], dtype=torch.int64)
        row_start = torch.cumsum(rows, 1) - rows  # [world, n_sparse]: where each parameter starts in a rank's part
        value_start = torch.cumsum(rows * widths, 1) - rows * widths
        total_rows = rows.sum(1)  # a rank's buffer: 2 float32 words per row index, then every value
        lengths = 2 * total_rows + (rows * widths).sum(1)
        index_parts, value_parts = [], []
        for i in ids:
            grad = self.parameters[i].grad
            if grad is not None and grad._nnz():
                index_parts.append(grad._indices()[0])
                value_parts.append(grad._values().reshape(-1).float())
        indices = torch.cat(index_parts) if index_parts else torch.empty(0, dtype=torch.int64, device=device)
        values = torch.cat(value_parts) if value_parts else torch.empty(0, device=device)
        packed = torch.cat([indices.contiguous().view(torch.float32), values])
        everyone = _all_gather_padded(packed, int(lengths.max()), world)
        for k, i in enumerate(ids):
            param, width = self.parameters[i], int(widths[k])
            index_rows, value_rows = [], []
            for r in range(world):
                n, at = int(rows[r, k]), int(row_start[r, k])
                value_at = 2 * int(total_rows[r]) + int(value_start[r, k])
                index_rows.append(everyone[r][: 2 * int(total_rows[r])].view(torch.int64)[at : at + n])
                value_rows.append(everyone[r][value_at : value_at + n * width])
            merged = torch.cat(value_rows).to(param.dtype).div_(world).reshape(-1, *param.shape[1:])
            param.grad = torch.sparse_coo_tensor(torch.cat(index_rows)[None], merged, param.shape,
                                                 check_invariants=False)


def _all_gather_padded(tensor: torch.Tensor, length: int, world: int) -> list[torch.Tensor]:
    """Every rank's 1-d `tensor` (each at most `length` long), gathered through buffers padded to `length`."""
    if length == 0:  # the same on every rank: nothing to exchange
        return [tensor.new_empty(0) for _ in range(world)]
    padded = torch.zeros(length, dtype=tensor.dtype, device=tensor.device)
    padded[: tensor.numel()] = tensor
    out = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(out, padded)
    return out
