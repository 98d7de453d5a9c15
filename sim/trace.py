"""Chrome/Perfetto traces (the Trace Event Format JSON that ui.perfetto.dev and chrome://tracing
open) of cycle-model and RTL-core runs. One writer serves both uses: `bitlut sim --trace`, a
whole run (`RunTrace`), and `bitlut exec --rtl --trace`, one program on the core and on the model
side by side (`verif.core_tb.write_traces`).

Timestamps are cycles (the viewer shows a cycle as one microsecond). A run is one process; each
unit has a track with a span per instruction from its start to the cycle the unit is free, and a
DMA unit's requests in flight (issue to retirement, several at once) have tracks of their own.
A cycle model run with `trace=True` also records its stalls (`CycleModel.stall_log`): a span on
the unit's track while it waits for a token or a DMA slot, and one nested in the instruction (or
request) that waits for room in a token FIFO.
"""

import json

from arch.isa import Unit
from bitlut.fileio import atomic_write
from sim.cycle import stall_words

DMA_UNITS = (Unit.LOAD, Unit.STORE)
UNIT_SORT = 1000          # the unit tracks are listed below the run's own (layers, tiles)


class Trace:
    """Trace events under construction: `process`, `track` and `span` add them, `write` saves
    the JSON. Spans on one track must nest (the format's rule); `Lanes` spreads spans that may
    overlap over as many tracks as it takes."""

    def __init__(self):
        self.events = []
        self.spans = 0
        self._pids = 0
        self._tids = {}

    def process(self, name):
        """A new process (a timeline group) named `name`, listed in creation order."""
        self._pids += 1
        pid = self._pids
        self.events += [{"name": "process_name", "ph": "M", "pid": pid, "args": {"name": name}},
                        {"name": "process_sort_index", "ph": "M", "pid": pid,
                         "args": {"sort_index": pid}}]
        return pid

    def track(self, pid, name, sort):
        """A new track of process `pid` named `name`, listed by `sort` (ascending)."""
        tid = self._tids[pid] = self._tids.get(pid, 0) + 1
        self.events += [{"name": "thread_name", "ph": "M", "pid": pid, "tid": tid,
                         "args": {"name": name}},
                        {"name": "thread_sort_index", "ph": "M", "pid": pid, "tid": tid,
                         "args": {"sort_index": sort}}]
        return tid

    def span(self, pid, tid, name, ts, end, cat, args=None):
        """A complete event over cycles [ts, end) (at least one cycle), `args` shown with it."""
        self.events.append({"name": name, "cat": cat, "ph": "X", "pid": pid, "tid": tid,
                            "ts": int(ts), "dur": max(int(end) - int(ts), 1),
                            "args": args or {}})
        self.spans += 1

    def write(self, path, **other):
        """Save as JSON; `other` goes into `otherData` (the viewer shows it as metadata)."""
        atomic_write(path, json.dumps({"traceEvents": self.events, "displayTimeUnit": "ns",
                                       "otherData": {"time_unit": "cycles", **other}}) + "\n")


class Lanes:
    """Tracks `name`, `name 2`, ... of one process, made as spans need them and listed from
    `sort` on: a span goes on the first lane free at its start."""

    def __init__(self, trace, pid, name, sort):
        self.trace, self.pid, self.name, self.sort = trace, pid, name, sort
        self.free_at = []            # per lane: (tid, first free cycle)

    def span(self, name, ts, end, cat, args=None):
        ts, end = int(ts), max(int(end), int(ts) + 1)
        k = next((k for k, (_, free) in enumerate(self.free_at) if free <= ts), None)
        if k is None:
            k = len(self.free_at)
            label = self.name if k == 0 else f"{self.name} {k + 1}"
            self.free_at.append((self.trace.track(self.pid, label, self.sort + k), 0))
        tid = self.free_at[k][0]
        self.free_at[k] = (tid, end)
        self.trace.span(self.pid, tid, name, ts, end, cat, args)
        return tid


class UnitTracks:
    """The tracks of one run in process `pid`: a track per unit, in the block diagram's order,
    each DMA unit's requests in flight on lanes below it."""

    def __init__(self, trace, pid):
        self.trace, self.pid = trace, pid
        self.unit, self.inflight = {}, {}
        for u in Unit:
            sort = UNIT_SORT + 100 * u.value
            self.unit[u] = trace.track(pid, u.name.lower(), sort)
            if u in DMA_UNITS:
                self.inflight[u] = Lanes(trace, pid, f"{u.name.lower()} requests in flight",
                                         sort + 1)

    def instructions(self, insns, log, indices, offset=0, stalls=None):
        """Spans of the instructions `indices` of a run: `insns` decoded, `log` the run's
        `{index: {"start", "end", ("retire")}}` (cycle model or core), `stalls` the model's
        `stall_log` grouped by instruction ({index: [(cause, t0, t1)]}); timestamps moved by
        `offset`. Returns the number of spans added."""
        trace, pid = self.trace, self.pid
        before = trace.spans
        stalls = stalls or {}
        for i in indices:
            ev = log.get(i)
            if ev is None or "start" not in ev:
                continue
            insn = insns[i]
            unit, name = insn.unit, insn.op.name.lower()
            start, end = ev["start"] + offset, ev.get("end", ev["start"] + 1) + offset
            waits = stalls.get(i, ())
            for cause, t0, t1 in waits:               # before the start: on the unit's track
                if not cause.startswith("full:"):
                    trace.span(pid, self.unit[unit], stall_words(unit.name.lower(), cause),
                               t0 + offset, t1 + offset, "stall", {"insn": i})
            trace.span(pid, self.unit[unit], name, start, end, unit.name.lower(),
                       {"insn": i, **{k: v + offset for k, v in ev.items()}})
            tid = self.unit[unit]
            if "retire" in ev:
                tid = self.inflight[unit].span(f"{name} in flight", end, ev["retire"] + offset + 1,
                                               f"{unit.name.lower()} in flight", {"insn": i})
            inside = end if "retire" in ev else start
            for cause, t0, t1 in waits:               # within the instruction or the request
                if cause.startswith("full:"):
                    trace.span(pid, tid, stall_words(unit.name.lower(), cause),
                               max(t0 + offset, inside), t1 + offset, "stall", {"insn": i})
        return trace.spans - before


def stalls_by_insn(stall_log):
    """`CycleModel.stall_log` [(index, cause, t0, t1)] as {index: [(cause, t0, t1)]}."""
    out = {}
    for i, cause, t0, t1 in stall_log or ():
        out.setdefault(i, []).append((cause, t0, t1))
    return out


DEFAULT_BUDGET = 200_000       # spans in a `bitlut sim --trace` file (about 30 MB of JSON)

SAMPLING_RULE = (
    "Every layer of every phase has a span on its phase's `layers` track, its full (possibly "
    "extrapolated) cycles long, laid end to end in execution order. The instructions of a "
    "traced layer's simulated run follow on the unit tracks, grouped into output tiles on the "
    "`tiles` track; a layer simulated by sampling shows its sampled tiles (marked sampled) "
    "and one `extrapolated` span for the rest. Tiles (with their instruction and stall spans) "
    "are admitted within the budget round-robin over the traced layers in run order, each "
    "layer's next tile in turn while it fits; a layer whose next tile does not fit keeps its "
    "first tiles and ends with a `not traced` span saying how many were left out.")


class RunTrace:
    """The trace of a whole `bitlut sim` run (`SAMPLING_RULE`): a process per phase with a
    `layers` track, a `tiles` track and the unit tracks of `UnitTracks`.

    `budget`: the most spans of tiles, instructions and stalls (each layer's own span and its
    `extrapolated` or `not traced` one come on top); `layers`: names of the layers whose
    instructions to trace (default: all)."""

    def __init__(self, budget=DEFAULT_BUDGET, layers=None):
        self.budget = budget
        self.only = set(layers) if layers else None
        self.phases = {}             # phase label -> [layer record]
        self.cut = []                # (phase, layer, tiles traced, tiles simulated) once written

    def add_layer(self, phase, report, program, model, simulated_cycles):
        """Layer `report` (`sim.driver.simulate_layer`) of `phase`, its simulated `program` and
        the `CycleModel` that ran it (with `trace=True`), which took `simulated_cycles`."""
        tiles = program.meta.get("tiles") or [[0, report["tokens"], 0, report["shape"][0],
                                               len(program.words) - 1]]
        rec = {"phase": phase, "report": report, "simulated_cycles": simulated_cycles,
               "simulated_tiles": len(tiles), "tiles": []}
        if self.only is None or report["name"] in self.only:
            # keep the tiles that can fit the budget (all a layer could be admitted), and only
            # their part of the run: memory stays bounded by the budget, not the program
            stalls, log, spent, first = stalls_by_insn(model.stall_log), {}, 0, 0
            for m0, rows, n0, n, last in tiles:
                idx = range(first, last + 1)
                ran = [i for i in idx if "start" in model.log.get(i, {})]
                cost = 1 + sum(1 + ("retire" in model.log[i]) + len(stalls.get(i, ()))
                               for i in ran)
                spent += cost
                if spent > self.budget:
                    break
                log.update((i, model.log[i]) for i in ran)
                rec["tiles"].append({"rows": (m0, rows), "outputs": (n0, n), "insns": idx,
                                     "cost": cost})
                first = last + 1
            rec.update(insns=program.insns()[:first], log=log,
                       stalls={i: v for i, v in stalls.items() if i < first})
        self.phases.setdefault(phase, []).append(rec)

    def _admitted(self):
        """{id(record): tiles traced}: round-robin over the traced layers in run order, each
        layer's next tile in turn while it fits the spans left (a layer whose next tile does
        not fit stops there)."""
        active = [r for rs in self.phases.values() for r in rs if r["tiles"]]
        kept, left = {id(r): 0 for r in active}, self.budget
        while active:
            more = []
            for r in active:
                k = kept[id(r)]
                if r["tiles"][k]["cost"] <= left:
                    left -= r["tiles"][k]["cost"]
                    kept[id(r)] = k + 1
                    if k + 1 < len(r["tiles"]):
                        more.append(r)
            active = more
        return kept

    def write(self, path, config):
        """Save the trace; returns the number of spans written. `self.cut` then lists the
        layers cut to the budget."""
        trace, admitted = Trace(), self._admitted()
        for phase, recs in self.phases.items():
            pid = trace.process(phase)
            layers = trace.track(pid, "layers", 0)
            tiles = Lanes(trace, pid, "tiles", 1)
            units = UnitTracks(trace, pid)
            offset = 0
            for rec in recs:
                self._layer(trace, pid, layers, tiles, units, rec, offset,
                            admitted.get(id(rec), 0))
                offset += rec["report"]["cycles"]
        trace.write(path, tool="bitlut sim", config=config.tag, clock_mhz=config.clock_mhz,
                    budget_spans=self.budget, sampling_rule=SAMPLING_RULE)
        return trace.spans

    def _layer(self, trace, pid, layers_tid, tiles, units, rec, offset, admitted):
        """The layer's span (its note says what is not traced), then its tiles."""
        r = rec["report"]
        nblocks = -(-r["shape"][0] // r["tiling"]["nw"])
        total = -(-r["tokens"] // r["tiling"]["mr"]) * nblocks
        kept = rec["tiles"][:admitted]
        traced = self.only is None or r["name"] in self.only
        cut = traced and len(kept) < rec["simulated_tiles"]
        args = {"shape": f"{r['shape'][0]}x{r['shape'][1]}", "tokens": r["tokens"],
                "cycles": r["cycles"], "simulated_cycles": rec["simulated_cycles"],
                "sampled": r["sampled"], "tiles": total,
                "tiles_simulated": rec["simulated_tiles"], "tiles_traced": len(kept)}
        if not traced:
            args["note"] = "instructions not traced (--trace-layer names other layers)"
        elif cut:
            args["note"] = (f"instructions of the first {len(kept)} of "
                            f"{rec['simulated_tiles']} simulated tiles traced (trace budget)")
            self.cut.append((rec["phase"], r["name"], len(kept), rec["simulated_tiles"]))
        trace.span(pid, layers_tid, r["name"] + (" (sampled)" if r["sampled"] else ""),
                   offset, offset + r["cycles"], "layer", args)
        if traced:
            self._tiles(tiles, units, rec, kept, offset, total, nblocks)

    @staticmethod
    def _tiles(tiles, units, rec, kept, offset, total, nblocks):
        """The `kept` tiles of a traced layer with their instructions, then a span for the
        simulated tiles left out (budget) and one for the tiles extrapolated (sampling)."""
        r, log, end = rec["report"], rec["log"], offset
        mr, nw = r["tiling"]["mr"], r["tiling"]["nw"]
        for t in kept:
            spans = [log[i] for i in t["insns"] if "start" in log.get(i, {})]
            if not spans:
                continue
            t0 = min(e["start"] for e in spans) + offset
            t1 = max(max(e["end"], e.get("retire", -1) + 1) for e in spans) + offset
            (m0, rows), (n0, nout) = t["rows"], t["outputs"]
            index = (m0 // mr) * nblocks + n0 // nw
            name = (f"tile {index + 1} of {total}" + (" (sampled)" if r["sampled"] else "")
                    + f": rows {m0}-{m0 + rows - 1}, outputs {n0}-{n0 + nout - 1}")
            tiles.span(name, t0, t1, "sampled tile" if r["sampled"] else "tile",
                       {"layer": r["name"], "sampled": r["sampled"]})
            units.instructions(rec["insns"], log, t["insns"], offset, rec["stalls"])
            end = max(end, t1)
        if len(kept) < rec["simulated_tiles"]:
            left = rec["simulated_tiles"] - len(kept)
            tiles.span(f"{left} more simulated tiles: not traced (trace budget)", end,
                       offset + rec["simulated_cycles"], "not traced", {"layer": r["name"]})
        if r["sampled"]:
            tiles.span(f"{total - rec['simulated_tiles']} more tiles: extrapolated, not simulated",
                       offset + rec["simulated_cycles"], offset + r["cycles"], "extrapolated",
                       {"layer": r["name"]})
