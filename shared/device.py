"""Device choice: CUDA when available (or when asked), else the CPU. Results do not depend on which."""

from __future__ import annotations

import torch


def resolve_device(name: str | None = None) -> torch.device:
    """`None`/"auto" -> cuda if available else cpu; otherwise the named device, checked to exist."""
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was requested but CUDA is not available here; use --device cpu or auto")
    return device


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously); a no-op on the CPU. Call it before reading a
    clock around GPU work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
