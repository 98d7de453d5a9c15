"""A byte-addressed scratchpad with unaligned wide ports, built from two banks of block RAM.

The ISA addresses scratchpads in bytes and the compiler aligns regions only to 16 bytes, while
the ports are wider (a DMA beat is one DRAM burst). So the scratchpad stores `word`-byte words in
two banks, even words in one and odd words in the other: an access of up to `word` bytes at any
byte address touches at most the two consecutive words `a // word` and `a // word + 1`, which lie
in different banks. A read reads both banks and rotates the pair by the byte offset; a write
rotates its bytes into the pair and writes each bank with byte enables. Each bank is one
`amaranth.lib.memory.Memory` with synchronous read ports, which Yosys maps to block RAM; a bank
with several writers is several such memories (`_bank`, docs/core.md: Scratchpads).

Timing: a read presented in cycle t (`en`) returns its bytes in cycle t + 1 (`LATENCY`); a write
presented in cycle t is visible to a read presented in cycle t + 1.

Ports are added before elaboration (as `Memory.read_port` does): `read_port(nbytes)` and
`write_port(nbytes)` return objects whose signals the caller drives:

- read port: `addr` (byte address), `en`; `data` (`nbytes` bytes, little-endian) one cycle later.
- write port: `addr`, `data` (`nbytes` bytes, byte 0 at `addr`), `count` (bytes to write, from
  byte 0 of `data`; 0 writes nothing).
"""

from amaranth.hdl import Cat, Const, Elaboratable, Module, Mux, Signal
from amaranth.lib.memory import Memory

__all__ = ["Scratchpad", "LATENCY"]

LATENCY = 1      # cycles from a read's address to its data


class _Port:
    def __init__(self, nbytes, addr_width, name, write):
        self.nbytes = nbytes
        self.addr = Signal(addr_width, name=f"{name}_addr")
        self.data = Signal(8 * nbytes, name=f"{name}_data")
        if write:
            self.count = Signal(range(nbytes + 1), name=f"{name}_count")
        else:
            self.en = Signal(name=f"{name}_en")


class Scratchpad(Elaboratable):
    """`nbytes` of scratchpad in two banks of words of at least `word` bytes (a power of two):
    the words are as wide as the widest port asks, rounded up to a power of two."""

    def __init__(self, nbytes, word, name="spad"):
        if word & (word - 1):
            raise ValueError(f"`word` must be a power of two, not {word}")
        self.nbytes, self.word, self.name = nbytes, word, name
        self.addr_width = max(1, nbytes.bit_length() + 1)
        self.readers, self.writers = [], []

    def read_port(self, nbytes):
        self._check(nbytes)
        port = _Port(nbytes, self.addr_width, f"{self.name}_r{len(self.readers)}", write=False)
        self.readers.append(port)
        return port

    def write_port(self, nbytes):
        self._check(nbytes)
        port = _Port(nbytes, self.addr_width, f"{self.name}_w{len(self.writers)}", write=True)
        self.writers.append(port)
        return port

    def _check(self, nbytes):
        if nbytes < 1:
            raise ValueError(f"a port must be at least 1 byte wide, not {nbytes}")
        self.word = max(self.word, 1 << (nbytes - 1).bit_length())

    @property
    def words(self):
        return -(-self.nbytes // self.word)

    @property
    def bank_depth(self):
        """Words in each of the two banks."""
        return max(1, -(-self.words // 2))

    def _split(self, addr):
        """(word offset, byte offset, bank-0 index, bank-1 index, first word odd) of `addr`."""
        shift = (self.word - 1).bit_length()
        w0 = addr >> shift
        return w0, addr[:shift] if shift else Const(0, 1), (w0 + 1) >> 1, w0 >> 1, w0[0]

    def elaborate(self, platform):
        m = Module()
        W = self.word
        writes = [[], []]           # per bank: (index, data, byte enables) of each writer
        for port in self.writers:
            _, off, i0, i1, odd = self._split(port.addr)
            window = Signal(16 * W)
            mask = Signal(2 * W)
            m.d.comb += [
                window.eq(port.data << (off * 8)),
                mask.eq((((Const(1, 2 * W + 1) << port.count) - 1)[:2 * W]) << off),
            ]
            low, high = window[:8 * W], window[8 * W:]
            mlow, mhigh = mask[:W], mask[W:]
            for b, index in enumerate((i0, i1)):
                mine = odd if b else ~odd          # which bank holds the first word
                writes[b].append((index, Mux(mine, low, high), Mux(mine, mlow, mhigh)))

        reads = [[], []]            # per bank: (index, en, data) of each reader
        for port in self.readers:
            _, off, i0, i1, odd = self._split(port.addr)
            data = [Signal(8 * W, name=f"{self.name}_r{len(reads[0])}_bank{b}") for b in range(2)]
            for b, index in enumerate((i0, i1)):
                reads[b].append((index, port.en, data[b]))
            off_q, odd_q = Signal.like(off), Signal()
            with m.If(port.en):
                m.d.sync += [off_q.eq(off), odd_q.eq(odd)]
            low = Signal(8 * W)
            high = Signal(8 * W)
            m.d.comb += [
                low.eq(Mux(odd_q, data[1], data[0])),
                high.eq(Mux(odd_q, data[0], data[1])),
                port.data.eq((Cat(low, high) >> (off_q * 8))[:8 * port.nbytes]),
            ]

        for b, half in enumerate(("even", "odd")):
            _bank(m, f"{self.name}_{half}", W, self.bank_depth, writes[b], reads[b])
        return m


def _bank(m, name, W, depth, writes, reads):
    """One bank of `depth` words of `W` bytes with the given write and synchronous read ports,
    all alike: a write presented in cycle t is seen by a read presented in cycle t + 1.

    With one writer the bank is one `Memory`. With N > 1 it is the XOR multi-write memory of
    LaForest et al. (FPGA 2012), because Yosys maps a memory with two write ports to
    flip-flops, not block RAM: writer w owns a memory X_w of one write port, in which it stores
    its data XOR the other writers' memories at that address, so the XOR of all N memories is the
    last data written to each byte. A write presented in cycle t reads the others in cycle t and
    commits in cycle t + 1; read ports are transparent to that commit, so the timing above holds
    and nothing outside the bank changes. Two writers writing the same byte in one cycle is a
    race (`sim.races` refuses such programs). Each X_w has one read port per reader and one per
    other writer, which Yosys replicates as it does for any single-writer memory.
    """
    if len(writes) <= 1:
        mem = Memory(shape=8 * W, depth=depth, init=[])
        m.submodules[name] = mem
        for index, data, en in writes:
            wp = mem.write_port(granularity=8)
            m.d.comb += [wp.addr.eq(index), wp.data.eq(data), wp.en.eq(en)]
        for index, en, data in reads:
            rp = mem.read_port()
            m.d.comb += [rp.addr.eq(index), rp.en.eq(en), data.eq(rp.data)]
        return
    mems = [Memory(shape=8 * W, depth=depth, init=[]) for _ in writes]
    wps = []
    for w, mem in enumerate(mems):
        m.submodules[f"{name}_x{w}"] = mem
        wps.append(mem.write_port(granularity=8))

    def read(mem, wp, index, en):
        rp = mem.read_port(transparent_for=(wp,))
        m.d.comb += [rp.addr.eq(index), rp.en.eq(en)]
        return rp.data

    for w, ((index, data, en), wp) in enumerate(zip(writes, wps, strict=True)):
        others = [read(mems[v], wps[v], index, en.any())
                  for v in range(len(mems)) if v != w]
        index_q, data_q, en_q = Signal.like(wp.addr), Signal(8 * W), Signal(W)
        m.d.sync += [index_q.eq(index), data_q.eq(data), en_q.eq(en)]
        mixed = data_q
        for o in others:
            mixed = mixed ^ o
        m.d.comb += [wp.addr.eq(index_q), wp.data.eq(mixed), wp.en.eq(en_q)]
    for index, en, data in reads:
        value = Const(0, 8 * W)
        for mem, wp in zip(mems, wps, strict=True):
            value = value ^ read(mem, wp, index, en)
        m.d.comb += data.eq(value)
