"""What part of a model a `.q` file covers, for `bitlut sim`'s report: readable layer labels,
the number of blocks in the file, and the model's figures for its linear layers.

A checkpoint's `.q` names layers by module (`encoder.layer.3.attention.self.query`); the
synthetic `llama7b.q` holds one LLaMA-7B block (`q_proj` ... `down_proj`). The simulated totals
cover the file's layers only, so a one-block file's tokens/s is per block; with the model's
block count (`--blocks N`, or the checkpoint's own count recorded by `bitlut quantize`) the report
adds the model's figure for the linear layers: N / (blocks in the file) times the latency,
energy and DRAM bytes. Attention (QK^T, softmax, AV), norms and the KV cache are not in this
figure: the whole model's (`sim.block_driver`, printed after it) has them.
"""

NOT_MODELLED = ("attention (QK^T, softmax, AV), norms and the KV cache are not in this figure "
                "(the whole model's, below when the file records its shape, has them)")


def block_index(name):
    """The block number in a layer name: its first all-digit component (`model.layers.3.mlp`
    -> 3), or None (`q_proj`)."""
    return next((int(p) for p in name.split(".") if p.isdigit()), None)


def labels(names):
    """Short, distinct labels: the leading components every name shares are dropped and the
    block number written `L<i>` (`encoder.layer.3.attention.self.query` -> `L3
    attention.self.query`). Names without a block number are kept as they are."""
    names = list(names)
    split = [n.split(".") for n in names]
    if len(names) < 2 or any(block_index(n) is None for n in names):
        return dict(zip(names, names, strict=True))
    common = 0
    while all(len(s) > common + 1 and s[common] == split[0][common] for s in split) \
            and not split[0][common].isdigit():
        common += 1
    out = {}
    for n, s in zip(names, split, strict=True):
        rest = s[common:]
        out[n] = f"L{rest[0]} {'.'.join(rest[1:])}" if rest[0].isdigit() else ".".join(rest)
    return out


def scope(names, settings, blocks=None):
    """{"blocks_in_file", "model_blocks", "from"}: blocks the file's layers span (1 when the names
    carry no block number), and the model's count from `blocks` (`--blocks`) or the `.q`
    quantizer settings' `blocks` (a checkpoint's), else None. Raises `ValueError` for a
    `blocks` smaller than the file's."""
    idx = {block_index(n) for n in names}
    in_file = 1 if None in idx else len(idx)
    model, origin = None, None
    if blocks is not None:
        if blocks < in_file:
            raise ValueError(f"--blocks must be at least the {in_file} blocks of the file, "
                             f"not {blocks}")
        model, origin = int(blocks), "--blocks"
    elif isinstance((settings or {}).get("blocks"), int):
        model, origin = int(settings["blocks"]), "checkpoint"
    return {"blocks_in_file": in_file, "model_blocks": model, "from": origin}


def model_totals(total, m, sc):
    """The model's figure for its linear layers from a phase's `total` at `m` tokens, or None
    when the model's block count is unknown."""
    if sc["model_blocks"] is None:
        return None
    f = sc["model_blocks"] / sc["blocks_in_file"]
    latency = total["latency_s"] * f
    return {"blocks": sc["model_blocks"], "latency_s": latency,
            "tokens_per_s": m / latency if latency else 0.0,
            "energy_j_per_token": total["energy_j_per_token"] * f,
            "bytes_per_token": total["bytes_per_token"] * f, "not_modelled": NOT_MODELLED}


def describe(sc, model):
    """The report's line on what the totals cover."""
    n = sc["blocks_in_file"]
    what = "one block" if n == 1 else f"{n} blocks"
    if model is None:
        return (f"  the totals cover the file's layers ({what}): tokens/s is per "
                f"{'block' if n == 1 else f'{n} blocks'}; --blocks N gives the model's figure "
                f"for its linear layers")
    src = "--blocks" if sc["from"] == "--blocks" else "the checkpoint's block count"
    return (f"  model, linear layers only ({model['blocks']} blocks, {src}; the file holds "
            f"{what}): {model['tokens_per_s']:,.2f} tokens/s, "
            f"{model['energy_j_per_token'] * 1e3:.3f} mJ/token, "
            f"DRAM {model['bytes_per_token'] / 2**20:.1f} MiB/token; {NOT_MODELLED}")
