"""Checkpoints as data: a directory with `weights.pt` (a state_dict, loaded with weights_only=True) and
`config.json` (family, sizes, architecture config and whatever metadata the caller adds, e.g. id maps).
Both files are written to temporary names and renamed into place (the file and then its folder synced to disk), so
a crash never leaves half a checkpoint. `exclusive_lock` serialises writers of one folder across processes."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shared.models.base import Recommender
from shared.models.sizing import build_model

WEIGHTS = "weights.pt"
CONFIG = "config.json"
FORMAT_VERSION = 1


def _atomic_write(path: Path, write: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """Make the renames and removals in `directory` durable (a rename is only on disk once its folder is)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_PARTIAL = re.compile(r"^\..+\.[a-z0-9_]{8}$")  # `_atomic_write`'s temporary names: .<file name>.<8 random chars>


def partial_writes(directory: Path) -> list[Path]:
    """Temporary files of atomic writes in `directory` that never finished (their writer was killed). Only call it
    where no other process may be writing, e.g. under the folder's `exclusive_lock`."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if _PARTIAL.match(p.name) and p.is_file())


class LockBusy(RuntimeError):
    """Another process (or another open of the same file) holds the lock."""


@contextmanager
def exclusive_lock(path: str | Path, *, wait: bool = True) -> Iterator[Path]:
    """Hold an advisory lock (fcntl.flock) on the file `path`, created if missing, for the duration of the block.

    Another holder makes this wait or, with `wait=False`, raise LockBusy. The lock belongs to the open file, so a
    killed holder releases it. A lock file removed by its holder (with the folder it guards) is not trusted: when
    the file at `path` is no longer the one locked, the lock is taken again on the new file."""
    path = Path(path)
    while True:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise LockBusy(f"{path} is held by another process") from None
            raise
        try:
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        if current is not None and current.st_ino == os.fstat(fd).st_ino:
            break
        os.close(fd)  # the holder before us removed the file: lock the new one
    try:
        yield path
    finally:
        os.close(fd)


@contextmanager
def exclusive_lock_or_fail(path: str | Path, busy: str) -> Iterator[Path]:
    """`exclusive_lock` without waiting: RuntimeError(`busy`, which says what holds it and what to do) when another
    process holds the lock. Only taking the lock can fail so; an error of the block passes through unchanged."""
    lock = exclusive_lock(path, wait=False)
    try:
        held = lock.__enter__()
    except LockBusy:
        raise RuntimeError(busy) from None
    try:
        yield held
    finally:
        lock.__exit__(None, None, None)


def atomic_write_text(path: Path, text: str) -> None:
    _atomic_write(Path(path), lambda handle: handle.write(text.encode()))


def atomic_save_npz(path: Path, **arrays: Any) -> None:
    """`numpy.savez` of `arrays` to `path`, atomically and durably (read back with allow_pickle=False)."""
    _atomic_write(path, lambda handle: np.savez(handle, **arrays))


def atomic_torch_save(path: Path, obj: Any) -> None:
    """torch.save through a temporary file renamed into place: an interrupted write leaves the old file whole."""
    _atomic_write(Path(path), lambda handle: torch.save(obj, handle))


def save_checkpoint(directory: str | Path, model: Recommender, metadata: dict[str, Any] | None = None) -> Path:
    directory = Path(directory)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    config = {
        "format_version": FORMAT_VERSION,
        "family": model.family,
        "n_users": model.n_users,
        "n_items": model.n_items,
        "config": model.config(),
        "num_parameters": model.num_parameters(),
        "metadata": metadata or {},
    }
    atomic_torch_save(directory / WEIGHTS, state)
    atomic_write_text(directory / CONFIG, json.dumps(config, indent=2, sort_keys=True))
    return directory


def read_checkpoint_config(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {directory}: {CONFIG} is missing")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} line {exc.lineno}: not valid JSON ({exc.msg})") from exc
    if config.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: unsupported checkpoint format {config.get('format_version')!r}")
    return config


def load_checkpoint(directory: str | Path, device: torch.device | str = "cpu") -> tuple[Recommender, dict[str, Any]]:
    """Rebuild the model from config.json and load its weights (weights_only=True: no pickled code runs)."""
    config = read_checkpoint_config(directory)
    model = build_model(config["family"], config["n_users"], config["n_items"], **config["config"])
    state = torch.load(Path(directory) / WEIGHTS, map_location=device, weights_only=True)
    model.load_state_dict(state)
    return model.to(device), config
