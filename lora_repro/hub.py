"""The Hugging Face hub, only when it can answer: offline machines must fail fast with a clear message, not
spend minutes in download retries."""
from __future__ import annotations

import functools
import os
import socket


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=timeout):
            return True
    except OSError:
        return False


def in_local_cache(repo_id: str, filename: str = "config.json", repo_type: str = "model") -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, filename, repo_type=repo_type), str)
    except Exception:
        return False
