"""Compiler + functional executor: every lowering is bit-exact against the golden model's own
kernels and within the stated tolerance of the PyTorch reference."""

import dataclasses
import zlib

import numpy as np
import pytest

from arch import config, isa, timing
from arch.program import Program
from compiler.lower import lower, write_inputs
from compiler.plan import LoweringError
from compiler.tiling import Tiling
from quant import reference, smooth
from quant.random_layer import codebook_layer, uniform_layer
from sim import golden
from sim.executor import ExecError, Executor

CONFIGS = {name: config.load(name) for name in ("lut", "bitserial", "mac")}


def with_act_quant(cfg, act):
    """`cfg` with `pe.act_quant = act` (validated again)."""
    return cfg.replace(pe=dataclasses.replace(cfg.pe, act_quant=act))


def execute(compiled, cfg):
    ex = Executor(cfg, compiled.program)
    ex.run()
    compiled.program.dram = ex.dram
    return compiled.program.read("y"), ex.stats


def golden_groups(layer, block_size):
    """The token_group column groups from the golden model's own layout: scale groups of
    uniform weights, CLAQ blocks of codebook weights. Returns `group_of_col [K]`."""
    if layer.kind == "uniform":
        return np.arange(layer.shape[1]) // layer.group_size
    return golden.codebook_layout(layer.bits, block_size).block_of_col


def golden_kernels(layer, compiled, cfg, xq, sx):
    """The output through the golden model's per-PE kernels (not the compiler's plan)."""
    plan = compiled.plan
    pe = cfg.pe.kind
    if layer.kind == "uniform":
        p = golden.uniform_partials(xq, layer.codes, layer.zeros, int(layer.bits[0]),
                                    layer.group_size, pe=pe, g=cfg.pe.group,
                                    symmetric=cfg.pe.symmetric)
        scales = np.asarray(layer.scales, np.float32)
    else:
        parts = golden.codebook_partials(xq, layer.codes, plan.cq, layer.bits, plan.block_size,
                                         pe=pe, index_bits=cfg.pe.index_bits,
                                         centroid_bits=cfg.pe.centroid_bits)
        p, scales = parts.stacked(), plan.block_scale
    corr = None
    # the hardware adds outliers in lowered-column order (the plan's list order)
    ol = golden.Outliers(plan.ol_rows, plan.ol_cols, plan.ol_vals) if layer.n_outliers else None
    if cfg.pe.act_quant == "token_group":
        if ol is not None:
            group = np.zeros(plan.kp, np.int64)
            valid = plan.src_col >= 0
            group[valid] = golden_groups(layer, plan.block_size)[plan.src_col[valid]]
            corr = golden.outlier_correction_grouped(plan.lower_activations(xq), ol,
                                                     layer.shape[0], group)
        return golden.epilogue_grouped(p, scales, sx, corr)
    if ol is not None:
        corr = golden.outlier_correction(plan.lower_activations(xq), ol, layer.shape[0])
    return golden.epilogue(p, scales, sx, corr)


CASES = [
    # (format, shape, bits, outliers)
    ("uniform", (70, 100), 2, 0),
    ("uniform", (33, 77), 4, 0),
    ("uniform", (65, 130), 3, 9),
    ("uniform", (20, 40), 1, 0),
    ("codebook", (70, 300), (2,), 0),
    ("codebook", (45, 270), (2, 3, 4), 0),
    ("codebook", (45, 270), (2, 3, 4), 30),
    ("codebook", (19, 131), (3, 4), 5),
]


@pytest.mark.parametrize("pe", sorted(CONFIGS))
@pytest.mark.parametrize("fmt,shape,bits,outliers", CASES,
                         ids=[f"{c[0]}-{c[1][0]}x{c[1][1]}-b{c[2]}-o{c[3]}" for c in CASES])
@pytest.mark.parametrize("m", [1, 7])
@pytest.mark.parametrize("act", config.ACT_QUANTS)
def test_program_matches_golden_and_reference(pe, fmt, shape, bits, outliers, m, act):
    cfg = with_act_quant(CONFIGS[pe], act)
    seed = zlib.crc32(repr((pe, fmt, shape, bits, outliers, m, act)).encode())
    print(f"seed {seed}")
    rng = np.random.default_rng(seed)
    n, k = shape
    if fmt == "uniform":
        layer = uniform_layer(rng, n, k, bits, group_size=32, outliers=outliers)
    else:
        layer = codebook_layer(rng, n, k, bits, outliers=outliers)
    x = rng.standard_normal((m, k)).astype(np.float32)
    x[:, rng.integers(0, k)] *= 20                     # an outlier activation channel
    if act == "smooth":     # migration scales as SmoothQuant would pick them for this x
        layer = dataclasses.replace(layer, smooth=smooth.smooth_scales(
            np.abs(x).max(axis=0), np.ones(k)))
    compiled = lower(layer, cfg, m)
    xq, sx = write_inputs(compiled, x)
    # the host's quantization is the golden model's, with its own column groups
    if act == "token_group":
        group = golden_groups(layer, compiled.plan.block_size)
        want = golden.quantize_activations_grouped(
            x, [np.nonzero(group == j)[0] for j in range(group.max() + 1)])
    else:
        want = golden.quantize_activations(
            golden.smooth_activations(x, layer.smooth) if act == "smooth" else x)
    assert np.array_equal(xq, want[0]) and np.array_equal(sx, want[1]), f"seed {seed}"
    image = compiled.program.dram.copy()
    y, stats = execute(compiled, cfg)
    assert np.array_equal(y, golden_kernels(layer, compiled, cfg, xq, sx)), f"seed {seed}"
    # the per-lookup path gives the same bits as the exact fast path the executor prefers
    if pe == "lut":
        slow = Executor(cfg, Program(compiled.program.words, image, compiled.program.symbols),
                        fast=False)
        slow.run()
        assert np.array_equal(slow.dram, compiled.program.dram), f"seed {seed}"
        assert stats.fast_insns == stats.insns["lmma"] and slow.stats.fast_insns == 0
    # the SimPy cycle model, running the same program in timed order, ends in the same state
    from sim.cycle import simulate
    _, model = simulate(cfg, Program(compiled.program.words, image, compiled.program.symbols))
    assert np.array_equal(model.executor.dram, compiled.program.dram), f"seed {seed}"

    # PyTorch reference with the weights the hardware holds (fixed-point centroids), within the
    # activation-quantization bound of docs/numerics.md
    plan = compiled.plan
    if fmt == "uniform":
        w = reference.dequant_uniform(layer.codes, layer.scales.astype(np.float32), layer.zeros,
                                      layer.group_size)
        groups = -(-k // layer.group_size)
    else:
        from sim.golden import codebook_layout
        lay = codebook_layout(layer.bits, plan.block_size)
        cs = plan.block_scale[lay.block_of_col][:, None]
        w = reference.dequant_codebook(layer.codes, cs * plan.cq.astype(np.float64))
        groups = lay.nblocks
    if outliers:
        w = reference.add_outliers(w, layer.outlier_rows, layer.outlier_cols,
                                   layer.outlier_vals.astype(np.float32))
    # the reference sees what the host wrote: X / smooth under `smooth` (the weights hold the
    # migration); token_group's bound takes each column's own activation scale
    xr = golden.smooth_activations(x, layer.smooth) if act == "smooth" else x
    y_ref = reference.reference_matmul(xr, w).numpy()
    w_abs = np.abs(w.numpy())
    if act == "token_group":
        sx = sx[:, golden_groups(layer, plan.block_size)]
    tol = golden.reference_tolerance(xr, w_abs, sx, groups, outliers)
    assert np.all(np.abs(y - y_ref) <= tol), f"seed {seed}"
    assert stats.insns["finish"] == 0 and sum(stats.insns.values()) == len(
        compiled.program.words) - 1


@pytest.mark.parametrize("pe", sorted(CONFIGS))
def test_program_round_trips_binary_text_and_file(pe, tmp_path):
    cfg = CONFIGS[pe]
    rng = np.random.default_rng(1)
    compiled = lower(codebook_layer(rng, 40, 200, (2, 4), outliers=7), cfg, 3)
    prog = compiled.program
    assert isa.assemble(isa.disassemble(prog.words), cfg) == prog.words
    assert isa.from_bytes(isa.to_bytes(prog.words)) == prog.words
    path = prog.save(tmp_path / "p.bin")
    again = Program.load(path)
    assert again.words == prog.words and np.array_equal(again.dram, prog.dram)
    assert again.symbols == prog.symbols and again.meta == prog.meta


def test_forced_tilings_agree():
    # every legal tiling computes the same bits: row and column blocks, partial last blocks
    cfg = CONFIGS["lut"]
    rng = np.random.default_rng(2)
    layer = uniform_layer(rng, 150, 96, 2, group_size=32, outliers=6)
    x = rng.standard_normal((9, 96)).astype(np.float32)
    results = []
    for tile in [Tiling(1, 64), Tiling(2, 128), Tiling(4, 150), Tiling(9, 70), Tiling(3, 1)]:
        compiled = lower(layer, cfg, 9, tile=tile)
        write_inputs(compiled, x)
        results.append(execute(compiled, cfg)[0])
    for r in results[1:]:
        assert np.array_equal(r, results[0])


def test_capacities_respected_and_reported():
    cfg = CONFIGS["lut"]
    rng = np.random.default_rng(3)
    layer = uniform_layer(rng, 300, 512, 2, group_size=128)
    compiled = lower(layer, cfg, 16)
    r = compiled.report
    for key in ("instructions", "tiling", "dram_bytes", "unit_cycles", "lookups"):
        assert key in r
    assert r["instructions"] == len(compiled.program.words)
    # weights move once per row block: bytes >= the packed layer size
    assert r["dram_bytes"]["weights"] >= 300 * 512 * 2 // 8
    # the report's counts are what the executor counts running the program
    write_inputs(compiled, rng.standard_normal((16, 512)))
    _, stats = execute(compiled, cfg)
    assert r["lookups"] == stats.lookups
    assert r["table_entries"] == stats.table_entries
    assert r["dram_bytes"]["weights"] + r["dram_bytes"]["activations"] + \
        r["dram_bytes"]["params"] == stats.dram_read_bytes


def test_tiling_that_overflows_is_rejected():
    cfg = CONFIGS["lut"]
    layer = uniform_layer(np.random.default_rng(4), 64, 128, 2, group_size=128)
    with pytest.raises(LoweringError, match=r"layer `u`: tiling mr=200, nw=64 must fit the "
                       r"\w+ buffer twice over"):
        lower(layer, cfg, 200, tile=Tiling(200, 64))


def test_config_that_cannot_hold_a_tile():
    cfg = CONFIGS["lut"]
    tiny = cfg.replace(sram=dataclasses.replace(cfg.sram, act_kib=1))
    layer = uniform_layer(np.random.default_rng(5), 64, 4096, 2, group_size=4096)
    with pytest.raises(LoweringError, match=r"layer `u` \(K=4096, widest k-step 4096 columns\): "
                       r"no tiling fits; the act buffer"):
        lower(layer, tiny, 1)


def test_unsupported_bits_rejected():
    layer = uniform_layer(np.random.default_rng(6), 8, 16, 8, group_size=16)
    with pytest.raises(LoweringError, match=r"layer `u`: weight bits must be one of the "
                       r"config's \[1, 2, 3, 4\] .*, not 8"):
        lower(layer, CONFIGS["lut"], 1)


# -- the executor enforces the hardware's rules ---------------------------------------------------
def small_program(pe="lut"):
    cfg = CONFIGS[pe]
    rng = np.random.default_rng(7)
    compiled = lower(uniform_layer(rng, 64, 64, 2, group_size=32), cfg, 2)
    write_inputs(compiled, rng.standard_normal((2, 64)))
    return cfg, compiled


def with_word(prog, i, insn):
    words = list(prog.words)
    words[i] = isa.encode(insn)
    return Program(words, prog.dram.copy(), prog.symbols, prog.meta)


def test_missing_token_is_caught():
    cfg, compiled = small_program()
    prog = compiled.program
    insns = prog.insns()
    # drop the matmul's wait for the table unit: the lookup then reads tables before they exist
    i = next(j for j, s in enumerate(insns) if s.op is isa.Opcode.LMMA)
    bad = dataclasses.replace(insns[i], wait=0)
    # consumers run first, so the lookup reads stale tables and the epilogue's parity check
    # trips; were it to get past that, the unconsumed token would be reported at finish
    with pytest.raises(ExecError, match=r"LUT partials must be even|token FIFOs must be empty "
                       r"at finish, not holding table->matmul"):
        Executor(cfg, with_word(prog, i, bad)).run()


def test_missing_token_gives_wrong_bits_not_silent_luck():
    cfg, compiled = small_program("mac")
    prog = compiled.program
    good = Executor(cfg, prog)
    good.run()
    insns = prog.insns()
    i = next(j for j, s in enumerate(insns) if s.op is isa.Opcode.MMA)
    bad = Executor(cfg, with_word(prog, i, dataclasses.replace(insns[i], wait=0)))
    with pytest.raises(ExecError, match=r"token FIFOs must be empty at finish, not holding "
                       r"load->matmul"):
        bad.run()


def test_deadlock_is_reported_not_hung():
    cfg, compiled = small_program()
    insns = compiled.program.insns()
    i = next(j for j, s in enumerate(insns) if s.op is isa.Opcode.LOAD)
    # the first load waits for a store that never signals it
    bad = dataclasses.replace(insns[i], wait=1 << isa.Unit.STORE.value)
    with pytest.raises(ExecError, match=rf"deadlock: load at insn {i} \(load\) waits for a token "
                       r"from store"):
        Executor(cfg, with_word(compiled.program, i, bad)).run()


def test_out_of_range_access_names_the_instruction():
    cfg, compiled = small_program()
    insns = compiled.program.insns()
    i = next(j for j, s in enumerate(insns) if s.op is isa.Opcode.LMMA)
    acc_cap = cfg.sram.bytes("acc")
    bad = dataclasses.replace(insns[i], args={**insns[i].args, "dst": acc_cap - 16})
    with pytest.raises(ExecError, match=rf"insn {i} \(lmma\): `dst` range .* must lie inside "
                       r"the acc buffer"):
        Executor(cfg, with_word(compiled.program, i, bad)).run()


def test_accumulator_overflow_is_an_error_unless_saturating():
    cfg = CONFIGS["mac"]
    narrow = cfg.replace(pe=dataclasses.replace(cfg.pe, acc_bits=16))
    rng = np.random.default_rng(8)
    layer = uniform_layer(rng, 8, 256, 8, group_size=256)
    layer.codes[:] = 255
    compiled = lower(layer, narrow, 1)
    write_inputs(compiled, np.full((1, 256), 1.0, np.float32))
    # every activation quantizes to 127 and every code is 255: 256 * 127 * 255
    with pytest.raises(ExecError, match=r"\(mma\): accumulator must stay in int16 "
                       rf"\[-32768, 32767\], not {256 * 127 * 255} \(overflow\)"):
        Executor(narrow, compiled.program).run()
    sat = narrow.replace(pe=dataclasses.replace(narrow.pe, saturate=True))
    Executor(sat, compiled.program).run()


def test_corrupted_word_is_rejected():
    cfg, compiled = small_program()
    words = list(compiled.program.words)
    words[3] |= 1 << 127
    with pytest.raises(isa.IsaError, match=r"insn 3 \(\w+\): `reserved` must be zero"):
        Executor(cfg, Program(words, compiled.program.dram, compiled.program.symbols))


def test_cli_disasm_reads_compiled_programs(cli, tmp_path):
    rng = np.random.default_rng(9)
    compiled = lower(uniform_layer(rng, 16, 32, 2, group_size=32), CONFIGS["lut"], 1)
    path = compiled.program.save(tmp_path / "u.prog")
    r = cli("disasm", path)
    assert r.returncode == 0, r.stderr
    assert isa.assemble(r.stdout) == compiled.program.words
    bad = tmp_path / "bad.prog"
    bad.write_bytes(path.read_bytes()[:40])
    r = cli("disasm", bad)
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.splitlines()) == 1


@pytest.mark.parametrize("tamper", [False, True])
@pytest.mark.parametrize("mode", [isa.Mode.UNIFORM, isa.Mode.CODEBOOK])
def test_fast_path_only_for_tables_tbl_built(mode, tamper):
    """The lmma fast path applies only when the tables are byte for byte what tbl wrote; a
    table changed since (here: one entry) is looked up entry by entry, as the hardware would."""
    from arch.isa import Buffer, Insn, Opcode
    cfg = CONFIGS["lut"]
    rng = np.random.default_rng(10)
    rows, kg, n = 3, 8, 70
    bits = 2
    g = cfg.pe.group if mode is isa.Mode.UNIFORM else cfg.codebook_group(bits)
    planes, width = (bits, g) if mode is isa.Mode.UNIFORM else (1, g * bits)
    tiles = -(-n // cfg.pe.cols)
    from arch import packing
    wbytes = packing.pack(rng.integers(0, 2 ** width, tiles * kg * planes * cfg.pe.cols), width)
    results = []
    for fast in (True, False):
        ex = Executor(cfg, Program([isa.encode(Insn(Opcode.FINISH))]), fast=fast)
        ex.sram[Buffer.ACT][:rows * kg * g] = rng.integers(-127, 128, rows * kg * g).astype(
            np.int8).view(np.uint8) if fast else results[0][2]
        ex.sram[Buffer.CODEBOOK][:4096] = rng.integers(0, 256, 4096).astype(np.uint8) \
            if fast else results[0][3]
        ex.sram[Buffer.WEIGHT][:len(wbytes)] = wbytes
        ex.execute(0, Insn(Opcode.TBL, dict(mode=mode, bits=bits, rows=rows, ngroups=kg,
                                            act=0, tbl=0, cb=0, sums=0x8000)))
        if tamper:
            ex.sram[Buffer.TABLE][4:6] ^= 1                    # change one table entry
        ex.execute(1, Insn(Opcode.LMMA, dict(rows=rows, n=n, kgroups=kg, bits=bits,
                                             mode=mode, accumulate=0, src=0, wgt=0, dst=0)))
        acc = ex.sram[Buffer.ACC][:4 * rows * n].view("<i4").copy()
        results.append((acc, ex.stats.fast_insns, ex.sram[Buffer.ACT][:rows * kg * g].copy(),
                        ex.sram[Buffer.CODEBOOK][:4096].copy()))
    (fast_acc, fast_count, _, _), (slow_acc, _, _, _) = results
    assert fast_count == (0 if tamper else 1)   # a changed table is not taken for tbl's
    assert np.array_equal(fast_acc, slow_acc)


def test_a_uniform_only_array_runs_uniform_layers_with_narrower_tables():
    cfg = CONFIGS["lut"]                                    # int16 centroids: int32 tables
    uniform = cfg.replace(pe=dataclasses.replace(cfg.pe, codebook=False))
    assert (cfg.table_entry_bytes, uniform.table_entry_bytes) == (4, 2)
    rng = np.random.default_rng(12)
    layer = uniform_layer(rng, 70, 100, 2, group_size=32)
    x = rng.standard_normal((7, 100)).astype(np.float32)
    outs = []
    for c in (cfg, uniform):
        compiled = lower(layer, c, 7, tile=Tiling(7, 64))
        xq, sx = write_inputs(compiled, x)
        y, stats = execute(compiled, c)
        assert np.array_equal(y, golden_kernels(layer, compiled, c, xq, sx))
        tbl = next(i for i in compiled.program.insns() if i.op is isa.Opcode.TBL)
        outs.append((y, stats.table_entries, timing.events(c, tbl)["sram_bytes"]))
    (y_both, entries, both_bytes), (y_uni, entries_uni, uni_bytes) = outs
    assert np.array_equal(y_both, y_uni) and entries == entries_uni
    assert uni_bytes * 2 == both_bytes                       # half the table traffic
    with pytest.raises(LoweringError, match=r"layer `.*`: a codebook layer needs an array "
                       r"that serves codebooks \(`pe\.codebook: true`\)"):
        lower(codebook_layer(rng, 40, 128, (2,)), uniform, 1)
