"""Multi-process runs under ``torchrun``: the process group, which work a rank owns, and combining results.

Training shards each epoch across ranks (:func:`normcore.tabular.training.train_denoiser`). Scoring, centile
curves and predictive moments shard their chunks of covariate points: chunk ``i`` belongs to rank
``i mod world``, every chunk draws from its own seed (which never depends on the number of ranks), and the
results are summed across ranks, each rank having left zeros where it owns nothing. Adding zeros is exact,
so a run on any number of processes writes the same numbers as one process with the same seed and device.
"""

from __future__ import annotations

import os

import numpy as np
import torch


def distributed_context() -> tuple[int, int]:
    """(rank, world size) of the torch.distributed process group, (0, 1) when not distributed."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def launched_distributed() -> bool:
    """Whether this process was started by ``torchrun`` (or another launcher) as one of several ranks."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and torch.distributed.is_available()


def init_distributed_from_env(device: torch.device | str | None = None) -> bool:
    """Join the process group when launched by ``torchrun`` (WORLD_SIZE > 1): nccl when the ranks use CUDA
    (each rank on GPU ``LOCAL_RANK`` modulo the GPUs present), gloo otherwise. Returns whether distributed."""
    if not launched_distributed():
        return False
    if not torch.distributed.is_initialized():
        kind = torch.device(device).type if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
        if kind == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
        torch.distributed.init_process_group(backend="nccl" if kind == "cuda" else "gloo")
    return True


def is_main_process() -> bool:
    """True on rank 0 (and in a single-process run): the process that writes outputs and prints."""
    return distributed_context()[0] == 0


def owned_chunks(n_chunks: int) -> range:
    """The chunk indices this rank computes (all of them in a single-process run)."""
    rank, world = distributed_context()
    return range(rank, n_chunks, world)


def sum_across_ranks(*arrays: np.ndarray) -> None:
    """Replace each array, in place, by its element-wise sum over the ranks (no-op in a single process).

    Used to gather results that each rank filled only where it owns the work (zeros elsewhere); boolean
    arrays are combined as "true on any rank".
    """
    if distributed_context()[1] == 1:
        return
    on_cuda = torch.distributed.get_backend() == "nccl"
    for a in arrays:
        data = a.astype(np.uint8) if a.dtype == bool else np.ascontiguousarray(a)
        t = torch.from_numpy(data)
        t = t.cuda() if on_cuda else t
        torch.distributed.all_reduce(t)
        result = t.cpu().numpy()
        a[...] = result > 0 if a.dtype == bool else result
