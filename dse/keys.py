"""Content keys of sweep points: sha256 of canonical JSON.

Canonical means the same value hashes the same however it was written: mapping keys are sorted,
tuples are lists, and a number that is integral (`64`, `64.0`) is written as that integer, any
other float as its shortest repr. So a sweep file reordered or written with `64.0` for `64`
reuses the results of the original.
"""

import hashlib
import json
import math


def canonical(value):
    """`value` with dicts sorted, tuples as lists and integral numbers as ints."""
    if isinstance(value, dict):
        return {str(k): canonical(value[k]) for k in sorted(value, key=str)}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        f = float(value)
        if math.isfinite(f) and f.is_integer() and abs(f) < 2 ** 53:
            return int(f)
        return f
    raise TypeError(f"cannot canonicalize {type(value).__name__}: {value!r}")


def dumps(value):
    """Canonical JSON text of `value` (compact, sorted): equal values give equal bytes."""
    return json.dumps(canonical(value), sort_keys=True, separators=(",", ":"),
                      allow_nan=False)


def key(value):
    """sha256 hex digest of `dumps(value)`."""
    return hashlib.sha256(dumps(value).encode()).hexdigest()
