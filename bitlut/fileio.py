"""Atomic writes: a killed run never leaves a half-written result file."""

import os
import tempfile
from pathlib import Path


def atomic_write(path, data):
    """Write `data` (str or bytes) to `path` through a temporary file in the same folder and a
    rename, so that readers see either the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "wb" if isinstance(data, (bytes, bytearray, memoryview)) else "w"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_path(path):
    """A temporary sibling of `path` for writers that need a file name (safetensors, matplotlib).
    Call `os.replace(tmp, path)` when done; see `AtomicPath`."""
    return AtomicPath(path)


class AtomicPath:
    """Context manager giving a temporary path that is renamed onto `path` on success and removed
    on failure."""

    def __init__(self, path):
        self.path = Path(path)

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp",
                                   dir=self.path.parent)
        os.close(fd)
        self.tmp = Path(tmp)
        return self.tmp

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)
        return False
