"""Which torch device a computation runs on, resolved once for every model (the generative
networks and the segmenter)."""

from __future__ import annotations

from ..core.errors import InputError


def resolve_device(device=None):
    """``"auto"``/None: the first CUDA GPU if there is one, else the CPU; otherwise the named
    device (``cpu``, ``cuda``, ``cuda:N``; a `torch.device` passes through). A name that is
    not a device, or CUDA on a machine without it, is an `InputError`."""
    import torch

    name = device.lower() if isinstance(device, str) else device
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(name)
    except RuntimeError:
        raise InputError("device", f"{device!r} is not a device (auto, cpu, cuda, cuda:N)") \
            from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InputError("device", "CUDA was requested but no CUDA GPU is available")
    return resolved
