"""What the samples of a comparison share, computed once and reused.

A comparison runs its samples as separate calls of `sampling.generate`, one per seed, so
that each sample's noise and its drawn outcome are its own (and its output is the same as
when it runs alone). What does not depend on the seed is the same in every call: the crop's
2.5D pre-treatment slices and anatomy maps, the ControlNet's embedded control for a list
of scenarios, the composition region around the baseline tumour. Recomputing them cost
about a tenth of each sample (docs/lung-model.md, speed). `Reuse` keeps the last few of
each, keyed by content: the arrays' bytes, the scenarios as the network encodes them, and
the network's weights version, so that another crop, another scenario or a weight update
(a training step) is never served a stale value. Reused values are the very tensors
computed the first time, so the outputs stay bit for bit what they were.
"""

from __future__ import annotations

import collections
import hashlib
import threading
import weakref
from typing import Any, Callable, Hashable

import numpy as np
import torch


class Reuse:
    """A small least-recently-used store of computed values (thread-safe)."""

    def __init__(self, size: int = 8):
        self.size = int(size)
        self._items: collections.OrderedDict[Hashable, Any] = collections.OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """The value stored under ``key``, else ``compute()``, stored."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key]
        value = compute()   # outside the lock: a long computation does not block the others
        with self._lock:
            self.misses += 1
            self._items[key] = value
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


def content_key(*values: Any) -> str:
    """A digest of arrays and tensors (shape, dtype, bytes) and plain values."""
    digest = hashlib.blake2b(digest_size=16)
    for value in values:
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().numpy()
        if isinstance(value, np.ndarray):
            digest.update(f"{value.shape}{value.dtype.str}".encode())
            digest.update(np.ascontiguousarray(value).tobytes())
        else:
            digest.update(repr(value).encode())
        digest.update(b"|")
    return digest.hexdigest()


def weights_version(model: torch.nn.Module) -> int:
    """Grows with every in-place change of the model's weights (its state dict: parameters
    and persistent buffers; optimizer steps, ``load_state_dict``): torch's per-tensor
    version counters, summed. Caches that are not weights (the rotary embedding's) are left
    out: they change while sampling."""
    return sum(t._version for t in model.state_dict(keep_vars=True).values())


_SHARED: "weakref.WeakKeyDictionary[torch.nn.Module, Reuse]" = weakref.WeakKeyDictionary()
_SHARED_LOCK = threading.Lock()


def shared(model: torch.nn.Module) -> Reuse:
    """The store of ``model`` (one per loaded network; it goes with the network)."""
    with _SHARED_LOCK:
        if model not in _SHARED:
            _SHARED[model] = Reuse()
        return _SHARED[model]
