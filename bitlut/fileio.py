"""Atomic writes: a killed run never leaves a half-written result file.

Every result file goes through a temporary sibling and a rename, so readers see either the old
file or the whole new one. The file gets the mode a plain `open(path, "w")` would give it under
the user's umask (mkstemp's private 0600 does not survive the rename). Problems with the path the
user gave (empty, a folder, a folder that cannot be written) are `UserError`s naming that path,
never the temporary file.
"""

import json
import os
import stat
import tempfile
import threading
from pathlib import Path

from bitlut.args import probe
from bitlut.errors import UserError

_umask_lock = threading.Lock()


def _umask():
    """The process umask (read by setting and restoring it: POSIX has no getter)."""
    with _umask_lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def output_path(path):
    """`path` as a `Path`, checked as a file the tools may write: a non-empty name that is not an
    existing folder. Raises `UserError` naming `path`."""
    text = os.fspath(path)
    if not isinstance(text, str) or not text.strip():
        raise UserError(f"output path must be a file name, not {text!r}")
    if "\0" in text:
        raise UserError(f"output path must not contain NUL, not {text!r}")
    p = Path(text)
    folder, _ = probe(p, "output path")
    if folder or text.endswith(("/", os.sep)):
        raise UserError(f"{text}: output path must be a file, not a folder")
    return p


def _open_temp(path):
    """(fd, tmp path) of a new temporary sibling of `path`, with the umask's mode."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise UserError(f"{path}: output file must be in a writable folder, not "
                        f"{e.strerror or e}") from None
    os.fchmod(fd, (stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP | stat.S_IWGRP | stat.S_IROTH
                   | stat.S_IWOTH) & ~_umask())
    return fd, Path(tmp)


def _commit(tmp, path):
    try:
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise _write_error(path, e) from None


def atomic_write(path, data):
    """Write `data` (str or bytes) to `path` through a temporary file in the same folder and a
    rename, so that readers see either the old file or the whole new one."""
    path = output_path(path)
    mode = "wb" if isinstance(data, (bytes, bytearray, memoryview)) else "w"
    fd, tmp = _open_temp(path)
    try:
        with os.fdopen(fd, mode) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:                 # a full disk, say: name the user's path
        tmp.unlink(missing_ok=True)
        raise _write_error(path, e) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _commit(tmp, path)
    return path


def _write_error(path, e):
    return UserError(f"{path}: output file must be writable, not {e.strerror or e}")


def atomic_path(path):
    """A temporary sibling of `path` for writers that need a file name (safetensors, matplotlib).
    Call `os.replace(tmp, path)` when done; see `AtomicPath`."""
    return AtomicPath(path)


class AtomicPath:
    """Context manager giving a temporary path that is renamed onto `path` on success and removed
    on failure."""

    def __init__(self, path):
        self.path = output_path(path)

    def __enter__(self):
        fd, self.tmp = _open_temp(self.path)
        os.close(fd)
        return self.tmp

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            _commit(self.tmp, self.path)
            return False
        self.tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):       # the writer failed on the temporary file
            raise _write_error(self.path, exc) from None
        return False


def safetensors_bytes(tensors, metadata):
    """The safetensors container of numpy `tensors` and string `metadata`, byte-identical for the
    same content: the library writes its metadata map in hash order, which changes from run to
    run, so the JSON header is rewritten with sorted keys (padded with spaces to 8 bytes, as the
    format asks; the tensor offsets are relative to the end of the header and do not move)."""
    import numpy as np
    from safetensors.numpy import save
    blob = save({k: np.ascontiguousarray(a) for k, a in tensors.items()}, metadata=metadata)
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + n])
    text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + blob[8 + n:]
