"""Small shared helpers: atomic writes (respecting the umask), JSON with numpy values.

Hashing and artifact checksums live in :mod:`hf_taskgroup.artifacts`.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (``/proc/self/status`` on Linux)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (not thread-safe, but only where /proc is absent)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temp file in the same folder, then ``os.replace``).

    The file gets the mode a plain ``open(path, "w")`` would give (``0o666`` minus the umask), not the
    ``0o600`` of the temporary file.

    Example::

        >>> atomic_write_text("outputs/run/report.md", "# report")  # doctest: +SKIP
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def atomic_write_json(path: str | Path, data: Any) -> None:
    """JSON-dump ``data`` (numpy values allowed) to ``path`` atomically."""
    atomic_write_text(path, json.dumps(data, indent=2, default=_json_default, sort_keys=False))


def read_folder(folder: str | Path) -> dict[str, bytes]:
    """Every file under ``folder`` as ``{relative posix path: bytes}`` (what a worker returns instead of writing).

    Example::

        >>> files = read_folder("outputs/tmp/model")  # doctest: +SKIP
        >>> write_folder("outputs/train/mtl", files)  # doctest: +SKIP
    """
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def write_folder(target: str | Path, files: dict[str, bytes]) -> None:
    """Write ``{relative path: bytes}`` as the folder ``target``, replacing it whole (never a half-written folder).

    The files are staged in a sibling folder that then replaces ``target``; the folder gets the mode of a
    plain ``mkdir`` (``0o777`` minus the umask).

    Example::

        >>> write_folder("outputs/run/runs/a+b/model", {"config.json": b"{}"})  # doctest: +SKIP
    """
    import shutil

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    os.chmod(staging, 0o777 & ~current_umask())  # mkdtemp makes it private; this is an ordinary folder
    for name, data in files.items():
        (staging / name).parent.mkdir(parents=True, exist_ok=True)
        (staging / name).write_bytes(data)
    if target.exists():
        shutil.rmtree(target)
    staging.replace(target)
