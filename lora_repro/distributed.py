"""Which process of a data-parallel job this is (torchrun / accelerate launch set RANK and WORLD_SIZE).

One notion of "main process" for the whole suite: rank 0 writes results, method weights, checkpoint manifests and
wandb; it is the process the Trainer calls world process zero (``save_on_each_node`` is never set).
"""
from __future__ import annotations

import os

import torch

from lora_repro.errors import UserError


def world_size() -> int:
    """Processes of a data-parallel job; 1 otherwise."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def barrier() -> None:
    """Wait for every process (a no-op outside a distributed job)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def per_device_batch_size(batch_size: int, processes: int) -> int:
    """``trainer.batch_size`` is the global batch (the paper's); data-parallel processes split it."""
    if batch_size % processes:
        raise UserError(f"trainer.batch_size={batch_size} is the global batch and must divide evenly over "
                         f"{processes} processes (WORLD_SIZE); choose a multiple of {processes}")
    return batch_size // processes
