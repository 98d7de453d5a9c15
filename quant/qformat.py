"""The `.q` file: a safetensors container of bit-packed codes, codebooks or scales/zeros, bit-width
map, permutation and outlier list, with a JSON metadata header; for a LLaMA-family model also its
shape (`model_shape`) and RMSNorm weights (`norm.<name>`). The spec is docs/qformat.md;
DESIGN.md §6. Loading never executes code (no pickle, no torch.load) and validates everything,
raising one `UserError` line that names the file, the tensor and the problem.
"""

import hashlib
import json
import struct
from pathlib import Path

import numpy as np

from bitlut.errors import UserError
from bitlut.fileio import AtomicPath
from quant.layer import CODEBOOK_BITS, KINDS, UNIFORM_BITS, QLayer, QModel
from quant.model_shape import (
    ModelShape,
    norm_of,
    require_shape,  # noqa: F401  (the block features' check of a file)
    role_of,
)

FORMAT = "bitlut.q"
VERSION = 1
META_KEY = "bitlut_q"
# Outlier rows fit 16 bits for every LLaMA/BERT linear layer (N <= 65536); wider layers use int32.
ROW16_MAX_N = 1 << 16
# N and K index int32 tensors (`perm`, wide `outlier_rows`), so neither may pass int32.
DIM_MAX = (1 << 31) - 1
NAME_MAX = 200                  # characters of a layer name (file names derive from it)
NORM_PREFIX = "norm."           # tensor `norm.<name>` holds QModel.norms[<name>]


# ---- bit packing -------------------------------------------------------------------------------

def column_nbytes(n, bits):
    """Bytes of each column's packed codes: ceil(N * b_k / 8). bits [K] -> [K] int64."""
    return (n * np.asarray(bits, dtype=np.int64) + 7) // 8


def pack_codes(codes, bits):
    """Pack codes [N, K] (uint8, code < 2**bits[k]) into one uint8 stream: column k after column
    k-1, each column's N codes of bits[k] bits LSB-first (code n in bits [n*b, (n+1)*b) of the
    column, bit 0 = the byte's least significant bit), zero-padded to a whole byte."""
    codes = np.asarray(codes, dtype=np.uint8)
    bits = np.asarray(bits, dtype=np.int64)
    n, k = codes.shape
    rows = {}                        # bit width -> [columns of that width, bytes]
    where = np.zeros(k, np.int64)    # column -> its row in rows[bits[column]]
    for b in np.unique(bits):
        cols = np.nonzero(bits == b)[0]
        where[cols] = np.arange(len(cols))
        rows[int(b)] = _pack_rows(codes[:, cols].T, int(b))
    if k == 0:
        return np.zeros(0, np.uint8)
    return np.concatenate([rows[int(b)][i] for b, i in zip(bits, where, strict=True)])


def _pack_rows(c, b):
    """c [C, N] codes of b bits -> [C, ceil(N b / 8)] bytes, LSB-first."""
    m, n = c.shape
    if 8 % b == 0:
        # b in {1, 2, 4, 8}: 8/b whole codes per byte, combined with shifts
        per = 8 // b
        c = np.pad(c, ((0, 0), (0, -n % per))).reshape(m, -1, per)
        out = np.zeros(c.shape[:2], np.uint8)
        for i in range(per):
            out |= c[:, :, i] << np.uint8(b * i)
        return out
    planes = (c[..., None] >> np.arange(b, dtype=np.uint8)) & 1
    return np.packbits(planes.reshape(m, n * b), axis=1, bitorder="little")


def _unpack_rows(raw, n, b):
    """Inverse of `_pack_rows`: ([C, N] codes, [C] bool: the padding bits are all 0)."""
    m = raw.shape[0]
    if 8 % b == 0:
        per = 8 // b
        mask = np.uint8((1 << b) - 1)
        c = np.empty((m, raw.shape[1], per), np.uint8)
        for i in range(per):
            c[:, :, i] = (raw >> np.uint8(b * i)) & mask
        c = c.reshape(m, -1)
        return c[:, :n], ~c[:, n:].any(1)
    allbits = np.unpackbits(raw, axis=1, bitorder="little")
    planes = allbits[:, :n * b].reshape(m, n, b)
    weights = (1 << np.arange(b)).astype(np.uint8)
    return (planes * weights).sum(2, dtype=np.uint8), ~allbits[:, n * b:].any(1)


def unpack_codes(stream, n, bits):
    """Inverse of `pack_codes`: (codes [N, K] uint8, padding_ok [K] bool: the pad bits are 0)."""
    bits = np.asarray(bits, dtype=np.int64)
    k = bits.shape[0]
    lens = column_nbytes(n, bits)
    offs = np.concatenate([[0], np.cumsum(lens)])
    codes_t = np.zeros((k, n), np.uint8)      # column-major while filling: row scatters are fast
    pad_ok = np.ones(k, bool)
    for b in np.unique(bits):
        cols = np.nonzero(bits == b)[0]
        length = int(lens[cols[0]])
        raw = stream[offs[cols][:, None] + np.arange(length)[None, :]]
        c, ok = _unpack_rows(raw, n, int(b))
        codes_t[cols] = c
        pad_ok[cols] = ok
    return codes_t.T, pad_ok                   # [N, K], Fortran order: no 200 MB transpose


# ---- layer <-> tensors -------------------------------------------------------------------------

def _row_dtype(n):
    return np.uint16 if n <= ROW16_MAX_N else np.int32


def layer_tensors(q):
    """The tensors of one layer, named `<layer>.<field>` (docs/qformat.md)."""
    n, k = q.shape
    cols = np.asarray(q.outlier_cols, dtype=np.int64)
    col_ptr = np.concatenate([[0], np.cumsum(np.bincount(cols, minlength=k))]).astype(np.int32)
    t = {
        "codes": pack_codes(q.codes, q.bits),
        "bits": np.asarray(q.bits, np.uint8),
        "perm": np.asarray(q.perm, np.int32),
        "outlier_col_ptr": col_ptr,
        # rows stored 0-based; N <= 65536 fits uint16
        "outlier_rows": np.asarray(q.outlier_rows).astype(_row_dtype(n)),
        "outlier_vals": np.asarray(q.outlier_vals, np.float16),
    }
    if q.kind == "codebook":
        t["codebooks"] = np.asarray(q.codebooks, np.float16)
    else:
        t["scales"] = np.asarray(q.scales, np.float16)
        t["zeros"] = np.asarray(q.zeros, np.uint8)
    if q.smooth is not None:
        t["smooth"] = np.asarray(q.smooth, np.float32)
    return {f"{q.name}.{f}": np.ascontiguousarray(a) for f, a in t.items()}


def _layer_meta(q):
    n, k = q.shape
    return {"name": q.name, "shape": [n, k], "kind": q.kind, "group_size": int(q.group_size),
            "max_bits": int(np.max(q.bits)), "n_outliers": q.n_outliers,
            "bits_per_weight": round(q.bits_per_weight(True), 6),
            "bits_per_weight_no_outliers": round(q.bits_per_weight(False), 6),
            **({"smooth": True} if q.smooth is not None else {})}


def norm_tensors(norms):
    """The tensors of `QModel.norms`: `norm.<name>` float32 [hidden] (docs/qformat.md)."""
    return {NORM_PREFIX + name: np.ascontiguousarray(np.asarray(w, np.float32))
            for name, w in (norms or {}).items()}


def checksum(tensors, meta):
    """sha256 over the metadata (canonical JSON without its `checksum` key) and then every tensor
    in name order: name, dtype, shape and raw little-endian bytes. "sha256:<hex>"."""
    h = hashlib.sha256()
    body = {key: v for key, v in meta.items() if key != "checksum"}
    h.update(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())
    for name in sorted(tensors):
        a = tensors[name]
        h.update(f"\0{name}\0{a.dtype.str}\0{list(a.shape)}\0".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return "sha256:" + h.hexdigest()


def write_raw(path, tensors, meta):
    """Write tensors + metadata as a `.q` container atomically, filling in the checksum. No
    validation: `save` validates first; tests use this to build malformed files."""
    from safetensors.numpy import save_file
    # safetensors 0.8 writes a strided numpy view's underlying buffer, not its elements
    # (np.require, unlike np.ascontiguousarray, keeps a 0-D array 0-D)
    tensors = {name: np.require(a, requirements="C") for name, a in tensors.items()}
    meta = dict(meta)
    meta["checksum"] = checksum(tensors, meta)
    with AtomicPath(path) as tmp:
        save_file(tensors, str(tmp), metadata={META_KEY: json.dumps(meta)})
    return Path(path)


def save(path, qmodel):
    """Write a `QModel` to `path` (atomic). Validates it first with the same checks as `load`."""
    tensors = {}
    for q in qmodel.layers.values():
        tensors.update(layer_tensors(q))
    tensors.update(norm_tensors(qmodel.norms))
    layers = [_layer_meta(q) for q in qmodel.layers.values()]
    meta = {"format": FORMAT, "version": VERSION, "model": qmodel.model,
            "quantizer": qmodel.quantizer, "layers": layers,
            "bits_per_weight": round(qmodel.bits_per_weight(True), 6),
            "bits_per_weight_no_outliers": round(qmodel.bits_per_weight(False), 6)}
    if qmodel.shape is not None:
        meta["model_shape"] = qmodel.shape.as_json()
    meta["checksum"] = checksum(tensors, meta)
    _validate(f"{path} (being saved)", tensors, meta)
    return write_raw(path, tensors, meta)


# ---- load and validate -------------------------------------------------------------------------

def _fail(path, what):
    raise UserError(f"{path}: {what}")


def _read_header(path, data):
    if len(data) < 8:
        _fail(path, f"file size must be at least 8 bytes (a safetensors header), not {len(data)}")
    (hlen,) = struct.unpack("<Q", data[:8])
    if hlen > len(data) - 8:
        _fail(path, f"safetensors header length must fit in the file ({len(data) - 8} bytes), "
                    f"not {hlen}: truncated file?")
    try:
        header = json.loads(data[8:8 + hlen])
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        _fail(path, f"safetensors header must be JSON, not unreadable ({e})")
    if not isinstance(header, dict):
        _fail(path, "safetensors header must be a JSON object")
    return header


def read_meta(path):
    """The JSON metadata of a `.q` file without reading its tensors (for `inspect`)."""
    path = Path(path)
    data = _read_file(path)
    return _parse_meta(path, _read_header(path, data))


def _read_file(path):
    if path.is_dir():
        raise UserError(f"{path}: .q file must be a file, not a folder")
    if not path.is_file():
        raise UserError(f"{path}: .q file must exist, not missing")
    return path.read_bytes()


def _parse_meta(path, header):
    st_meta = header.get("__metadata__") or {}
    raw = st_meta.get(META_KEY) if isinstance(st_meta, dict) else None
    if not isinstance(raw, str):
        _fail(path, f"safetensors metadata must hold a `{META_KEY}` key: not a bitlut .q file")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as e:
        _fail(path, f"`{META_KEY}` metadata must be JSON, not unreadable ({e})")
    if not isinstance(meta, dict):
        _fail(path, f"`{META_KEY}` metadata must be a JSON object, not {type(meta).__name__}")
    if meta.get("format") != FORMAT:
        _fail(path, f"metadata format must be {FORMAT!r}, not {_short(meta.get('format'))}")
    if meta.get("version") != VERSION or isinstance(meta.get("version"), bool):
        _fail(path, f"format version must be {VERSION}, not {_short(meta.get('version'))}")
    quantizer = meta.get("quantizer", {})
    if not isinstance(quantizer, dict):
        _fail(path, f"metadata `quantizer` must be a JSON object, not {_short(quantizer)}")
    if not isinstance(meta.get("model", ""), str):
        _fail(path, f"metadata `model` must be a string, not {_short(meta.get('model'))}")
    return meta


def _short(value):
    """`repr(value)`, cut to fit one line of an error message."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_layer_name(name):
    """The problem with layer name `name`, or None: names are non-empty printable text of at most
    `NAME_MAX` characters (they become tensor names and, in `bitlut compile`, file names)."""
    if not isinstance(name, str) or not name:
        return f"must be a non-empty string, not {_short(name)}"
    if len(name) > NAME_MAX:
        return f"must be at most {NAME_MAX} characters, not {len(name)}"
    if not name.isprintable():
        return f"must be printable (no control characters or NUL), not {_short(name)}"
    return None


def load(path):
    """Read and validate a `.q` file; returns a `QModel` (`shape` and `norms` None for a file
    without `model_shape`). Raises `UserError` naming the file, the tensor and the problem for any
    malformed, truncated, tampered or unsupported file."""
    from safetensors import SafetensorError
    from safetensors.numpy import load as st_load
    path = Path(path)
    data = _read_file(path)
    meta = _parse_meta(path, _read_header(path, data))
    try:
        tensors = st_load(data)
    except SafetensorError as e:
        msg = " ".join(str(e).split())
        _fail(path, f"safetensors container must be well-formed, not broken ({msg})")
    if checksum(tensors, meta) != meta.get("checksum"):
        _fail(path, f"checksum must be {_short(meta.get('checksum'))} as recorded, not "
                    f"{checksum(tensors, meta)!r}: the file was modified or corrupted")
    layers, shape, norms = _validate(path, tensors, meta)
    return QModel(model=str(meta.get("model", "")), quantizer=meta.get("quantizer", {}),
                  layers={q.name: q for q in layers}, shape=shape, norms=norms or None)


_DTYPES = {"codes": np.uint8, "bits": np.uint8, "perm": np.int32, "outlier_col_ptr": np.int32,
           "outlier_vals": np.float16, "codebooks": np.float16, "scales": np.float16,
           "zeros": np.uint8, "smooth": np.float32}


def _validate(path, tensors, meta):
    """Check the metadata and every tensor; returns (the list of `QLayer`s, the `ModelShape` or
    None, the norms {name: [hidden] float32})."""
    shape = None
    if "model_shape" in meta:
        shape = ModelShape.from_json(meta["model_shape"], path)
    layers_meta = meta.get("layers")
    if not isinstance(layers_meta, list) or not layers_meta:
        _fail(path, f"metadata `layers` must be a non-empty list, not {_short(layers_meta)}")
    seen = set()
    out = []
    for lm in layers_meta:
        q = _validate_layer(path, tensors, lm)
        if q.name in seen:
            _fail(path, f"layer names must be unique, not `{q.name}` twice")
        seen.add(q.name)
        if shape is not None:
            _check_role(path, q, shape)
        out.append(q)
    expected = {name for q in out for name in _field_names(q.name, q.kind, q.smooth is not None)}
    norms = _validate_norms(path, tensors, expected, shape)
    expected |= {NORM_PREFIX + name for name in norms}
    extra = sorted(set(tensors) - expected)
    if extra:
        _fail(path, f"tensor `{extra[0]}` must belong to a layer in the metadata, not be extra")
    return out, shape, norms


def _check_block(path, what, block, shape):
    if block is not None and block >= shape.blocks:
        _fail(path, f"{what} block must be less than `model_shape.blocks` = {shape.blocks}, "
                    f"not {block}")


def _check_role(path, q, shape):
    """A block's linear layer (`quant.model_shape.role_of`) has the shape `model_shape` gives."""
    parsed = role_of(q.name)
    if parsed is None:
        return
    block, role = parsed
    _check_block(path, f"layer `{q.name}`", block, shape)
    want = shape.layer_shapes[role]
    if q.shape != want:
        _fail(path, f"layer `{q.name}` shape must be {list(want)} (a {role} of `model_shape`), "
                    f"not {list(q.shape)}")


def _validate_norms(path, tensors, taken, shape):
    """{name: [hidden] float32} from the `norm.<name>` tensors not `taken` by a layer."""
    norms = {}
    for tname in sorted(t for t in tensors if t.startswith(NORM_PREFIX) and t not in taken):
        name = tname[len(NORM_PREFIX):]
        problem = check_layer_name(name)
        if problem:
            _fail(path, f"norm tensor name {problem}")
        parsed = norm_of(name)
        if parsed is None:
            _fail(path, f"tensor `{tname}` must be `norm.norm` or a block's "
                        f"`norm.<prefix>input_layernorm` or `norm.<prefix>post_attention_layernorm`"
                        f", not another name")
        if shape is None:
            _fail(path, f"tensor `{tname}` must go with metadata `model_shape` (which gives its "
                        f"[hidden] shape), not without")
        _check_block(path, f"tensor `{tname}`", parsed[0], shape)
        a = tensors[tname]
        if a.dtype != np.float32:
            _fail(path, f"tensor `{tname}` dtype must be float32, not {a.dtype}")
        if a.shape != (shape.hidden,):
            _fail(path, f"tensor `{tname}` shape must be [{shape.hidden}] (`model_shape.hidden`), "
                        f"not {list(a.shape)}")
        if not np.isfinite(a).all():
            _fail(path, f"tensor `{tname}` values must be finite, not inf/nan")
        norms[name] = a.copy()
    return norms


def _field_names(name, kind, smooth=False):
    fields = ["codes", "bits", "perm", "outlier_col_ptr", "outlier_rows", "outlier_vals"]
    fields += ["codebooks"] if kind == "codebook" else ["scales", "zeros"]
    fields += ["smooth"] if smooth else []
    return [f"{name}.{f}" for f in fields]


def _validate_layer(path, tensors, lm):
    if not isinstance(lm, dict):
        _fail(path, f"layer metadata must be a JSON object, not {_short(lm)}")
    problem = check_layer_name(lm.get("name"))
    if problem:
        _fail(path, f"layer `name` {problem}")
    name = lm["name"]
    shape = lm.get("shape")
    if (not isinstance(shape, list) or len(shape) != 2
            or not all(type(d) is int and 0 < d <= DIM_MAX for d in shape)):
        _fail(path, f"layer `{name}` shape must be [N, K] of integers from 1 to {DIM_MAX}, "
                    f"not {_short(shape)}")
    n, k = shape
    kind = lm.get("kind")
    if kind not in KINDS:
        _fail(path, f"layer `{name}` kind must be one of {list(KINDS)}, not {_short(kind)}")

    def get(field, dtype, shp):
        tname = f"{name}.{field}"
        if tname not in tensors:
            _fail(path, f"tensor `{tname}` must be present, not missing")
        a = tensors[tname]
        if a.dtype != np.dtype(dtype):
            _fail(path, f"tensor `{tname}` dtype must be {np.dtype(dtype)}, not {a.dtype}")
        if shp is not None and tuple(a.shape) != tuple(shp):
            _fail(path, f"tensor `{tname}` shape must be {list(shp)}, not {list(a.shape)}")
        return a

    def bad(field, what):
        _fail(path, f"tensor `{name}.{field}` {what}")

    bits = get("bits", np.uint8, (k,))
    allowed = CODEBOOK_BITS if kind == "codebook" else UNIFORM_BITS
    wrong = bits[~np.isin(bits, allowed)]
    if wrong.size:
        bad("bits", f"values must be in {list(allowed)}, not {int(wrong[0])}")
    if kind == "uniform" and np.any(bits != bits[0]):
        bad("bits", f"must be equal for a uniform layer, not {sorted(set(bits.tolist()))}")
    perm = get("perm", np.int32, (k,))
    if not np.array_equal(np.sort(perm), np.arange(k)):
        bad("perm", f"must be a permutation of 0..{k - 1}, not a list with repeats or gaps")
    stream = get("codes", np.uint8, (int(column_nbytes(n, bits).sum()),))
    codes, pad_ok = unpack_codes(stream, n, bits)
    if not pad_ok.all():
        bad("codes", f"padding bits must be zero, not set in column {int(np.argmin(pad_ok))}")

    group_size = lm.get("group_size", 0)
    cb = scales = zeros = None
    if kind == "codebook":
        c = 1 << int(bits.max())
        cb = get("codebooks", np.float16, (k, c))
        if not np.isfinite(cb).all():
            bad("codebooks", "values must be finite, not inf/nan")
        used = np.arange(c)[None, :] < (1 << bits.astype(np.int64))[:, None]
        if np.any(cb[~used] != 0):
            bad("codebooks", "entries beyond 2**bits[k] must be 0, not set")
        cbf = cb.astype(np.float32)
        dec = (cbf[:, 1:] < cbf[:, :-1]) & used[:, 1:]
        if dec.any():
            bad("codebooks", f"must be sorted ascending per column, not in column "
                             f"{int(np.nonzero(dec.any(1))[0][0])}")
    else:
        if type(group_size) is not int or not 1 <= group_size <= DIM_MAX:
            _fail(path, f"layer `{name}` group_size must be a positive integer, "
                        f"not {_short(group_size)}")
        g = -(-k // group_size)
        scales = get("scales", np.float16, (n, g))
        if not (np.isfinite(scales).all() and (scales > 0).all()):
            bad("scales", "values must be finite and > 0, not otherwise")
        zeros = get("zeros", np.uint8, (n, g))
        if zeros.size and int(zeros.max()) >= (1 << int(bits[0])):
            bad("zeros", f"values must be < 2**{int(bits[0])}, not {int(zeros.max())}")

    col_ptr = get("outlier_col_ptr", np.int32, (k + 1,))
    vals = get("outlier_vals", np.float16, None)
    if vals.ndim != 1:
        bad("outlier_vals", f"must be 1-D, not {vals.ndim}-D")
    nnz = vals.shape[0]
    rows = get("outlier_rows", _row_dtype(n), (nnz,))
    if col_ptr[0] != 0 or col_ptr[-1] != nnz or np.any(np.diff(col_ptr) < 0):
        bad("outlier_col_ptr", f"must rise from 0 to the outlier count {nnz}, not "
                               f"{int(col_ptr[0])}..{int(col_ptr[-1])} (or decreasing)")
    rows64 = rows.astype(np.int64)
    if nnz and rows64.max() >= n:
        bad("outlier_rows", f"values must be < N = {n}, not {int(rows64.max())}")
    if nnz and rows64.min() < 0:
        bad("outlier_rows", f"values must be >= 0, not {int(rows64.min())}")
    cols = np.repeat(np.arange(k), np.diff(col_ptr.astype(np.int64)))
    if nnz > 1:
        same_col = cols[1:] == cols[:-1]
        if np.any(same_col & (rows64[1:] <= rows64[:-1])):
            bad("outlier_rows", "must be strictly increasing within a column, not repeated "
                                "or unsorted")
    if not np.isfinite(vals).all():
        bad("outlier_vals", "values must be finite, not inf/nan")
    if lm.get("n_outliers", nnz) != nnz or isinstance(lm.get("n_outliers"), bool):
        _fail(path, f"layer `{name}` n_outliers must be {nnz} (the tensors), "
                    f"not {_short(lm.get('n_outliers'))}")
    smooth = None
    if lm.get("smooth", False) is not False:
        if lm["smooth"] is not True:
            _fail(path, f"layer `{name}` smooth must be true or absent, not {_short(lm['smooth'])}")
        smooth = get("smooth", np.float32, (k,))
        if not (np.isfinite(smooth).all() and (smooth > 0).all()):
            bad("smooth", "values must be finite and > 0, not otherwise")
        smooth = smooth.copy()
    return QLayer(name=name, kind=kind, codes=codes, bits=bits.copy(), perm=perm.copy(),
                  codebooks=cb, scales=scales, zeros=zeros,
                  group_size=int(group_size) if kind == "uniform" else 0,
                  outlier_rows=rows64, outlier_cols=cols.astype(np.int64), outlier_vals=vals,
                  smooth=smooth)
