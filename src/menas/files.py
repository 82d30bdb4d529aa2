"""Files that must survive a crash are written to a temporary name in the same folder and renamed (ARCHITECTURE.md,
"Conventions").

Layer 0: no menas imports, no torch.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


def write_atomically(path: str | os.PathLike[str], write: Callable[[Path], object]) -> Path:
    """Calls `write(tmp)` for a temporary file beside `path`, then renames it to `path`: readers see the old file
    or the whole new one, never a half-written one. The temporary file is removed if `write` fails. The
    temporary name keeps the suffix (some writers pick the format from it) and holds the process id (two processes
    writing the same file do not share a temporary)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_json(path: str | os.PathLike[str], data: Any) -> Path:
    """`data` as indented JSON, atomically."""
    return write_atomically(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2) + "\n"))
