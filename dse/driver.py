"""The sweep driver: the evaluation ladder, run on an executor, results into the store.

1. Every valid point by the `roofline` rung, in batches of `ladder.batch` points (one task
   each: a trivial Dask task costs milliseconds, a point about a hundred).
2. The `sim` rung (SimPy) for each workload's Pareto front over the objectives, then the points
   within `ladder.epsilon` of it and the grid neighbours (one axis one step away) of the front's
   points, the workloads taking turns, one config per task (its points on the workloads of
   one `.q` file at several contexts and KV formats, which share its linear layers' SimPy
   runs: `dse.evaluate` keeps them per process); the front is recomputed with the
   SimPy figures where they exist, and the rung repeats until a round leaves the front as it was
   (or promotes nothing new): the front stopped changing. `max_rounds` or `max_sim_points` (the
   total SimPy budget; null: none) end it earlier.

Invalid points are stored with their reason and never evaluated; infeasible ones (a context or
KV format the point cannot run) are stored so by the roofline rung; points that break a
constraint are evaluated but kept off the fronts. The driver is the store's only writer, so a
sweep killed at any moment and run again evaluates only what the store lacks, and exactly one
result per (point, rung) survives however often a task ran.
"""

import math
import time
from concurrent.futures import as_completed
from concurrent.futures.process import BrokenProcessPool

from dse import evaluate as evaluate_mod
from dse import executor as executor_mod
from dse import pareto
from dse.store import Store
from quant.progress import progress

OPS = {"<=": lambda a, b: a <= b, ">=": lambda a, b: a >= b, "<": lambda a, b: a < b,
       ">": lambda a, b: a > b}
MAX_POOL_RESTARTS = 3


def store_path(sweep):
    from pathlib import Path
    return Path("build") / "dse" / sweep.name / "store.sqlite"


def unique_points(points):
    """The first point of each key, in order (grid points with equal configs share a key)."""
    seen, out = set(), []
    for p in points:
        if p.key not in seen:
            seen.add(p.key)
            out.append(p)
    return out


def _row(point, res):
    return {**res, "workload": point.workload.name,
            "point": {"values": point.values, "coords": list(point.coords),
                      "workload": point.workload.name}}


class Runner:
    """Runs tasks of `fn(stage, workload, items)` on one executor, rebuilt if a local pool
    breaks, and writes each finished task's results to the store as one transaction."""

    def __init__(self, store, kind, workers, scheduler, fn, show_progress):
        self.store, self.kind, self.workers, self.scheduler = store, kind, workers, scheduler
        self.fn, self.progress = fn, show_progress
        self._cm = self.ex = None

    def __enter__(self):
        self._open()
        return self

    def __exit__(self, *exc):
        self._close()
        return False

    def _open(self):
        self._cm = executor_mod.executor(self.kind, self.workers, self.scheduler)
        self.ex = self._cm.__enter__()

    def _close(self):
        if self._cm is not None:
            cm, self._cm = self._cm, None
            cm.__exit__(None, None, None)

    def run(self, stage, tasks, by_key, label):
        """Evaluate `tasks` at `stage`, each a list of parts [(workload, [point, ...])] that one
        worker evaluates in turn (the workloads of one `.q` file at several contexts share a
        config's linear layers: `dse.evaluate` keeps them per process); returns how many
        results were new in the store."""
        new = 0
        restarts = 0
        total = sum(len(pts) for task in tasks for _, pts in task)
        with progress(total, label, enabled=self.progress) as advance:
            pending = list(tasks)
            while pending:
                done = self.store.done(stage)
                pending = [[(wl, [p for p in pts if p.key not in done]) for wl, pts in task]
                           for task in pending]
                pending = [[(wl, pts) for wl, pts in task if pts] for task in pending]
                pending = [task for task in pending if task]
                if not pending:
                    break
                futs = {self.ex.submit(run_parts, self.fn, stage,
                                       [(wl, [(p.key, p.config) for p in pts])
                                        for wl, pts in task]): i
                        for i, task in enumerate(pending)}
                try:
                    for f in as_completed(futs):
                        results = f.result()
                        new += self.store.put_many([_row(by_key[r["key"]], r) for r in results])
                        advance(len(results))
                    pending = []
                except BrokenProcessPool:
                    restarts += 1
                    if restarts > MAX_POOL_RESTARTS:
                        raise
                    self._close()
                    self._open()
        return new


def run_parts(fn, stage, parts):
    """`fn(stage, workload, items)` for each part [(workload, items)] in turn, in one worker:
    the results of all."""
    return [r for wl, items in parts for r in fn(stage, wl, items)]


def sim_tasks(points):
    """The sim rung's tasks: the points of one `.q` file and grid point (one config at several
    contexts and KV formats) together, in the order of their first point."""
    groups = {}
    for p in points:
        groups.setdefault((p.workload.checksum, p.coords), []).append(p)
    return [[(p.workload, [p]) for p in pts] for pts in groups.values()]


def merged(store, points):
    """{key: (stage, status, metrics)}: each point's best rung (sim over roofline)."""
    out = {}
    for stage in evaluate_mod.STAGES:
        for r in store.rows(stage):
            if r["status"] == "ok" or r["key"] not in out:
                out[r["key"]] = (stage, r["status"], r["metrics"])
    keys = {p.key for p in points}
    return {k: v for k, v in out.items() if k in keys}


def feasible(sweep, metrics):
    return all(OPS[op](metrics[m], bound) for m, op, bound in sweep.constraints)


def objective_matrix(sweep, pts, table):
    return [[table[p.key][2][m] for m in sweep.objectives] for p in pts]


def scores(sweep, pts, table):
    """Per point the geometric mean over the objectives of value / best value among `pts`
    (min objectives inverted): 1 is a point best at everything at once."""
    if not pts:
        return []
    vals = objective_matrix(sweep, pts, table)
    out = [0.0] * len(pts)
    for j, sense in enumerate(sweep.objectives.values()):
        col = [v[j] for v in vals]
        best = max(col) if sense == "max" else min(col)
        for i, v in enumerate(col):
            r = v / best if sense == "max" else best / v
            out[i] += math.log(max(r, 1e-300)) / len(sweep.objectives)
    return [math.exp(x) for x in out]


def fronts(sweep, points, table):
    """{workload name: (feasible ok points, front indices, near-front indices)}."""
    senses = list(sweep.objectives.values())
    out = {}
    for wl in sweep.workloads:
        pts = [p for p in points if p.workload.name == wl.name and p.key in table
               and table[p.key][1] == "ok" and feasible(sweep, table[p.key][2])]
        vals = objective_matrix(sweep, pts, table)
        out[wl.name] = (pts, pareto.front(vals, senses),
                        pareto.near_front(vals, senses, sweep.ladder["epsilon"]))
    return out


def neighbours(point, grid):
    """Valid points one step away along one dimension, on the same workload."""
    out = []
    for d in range(len(point.coords)):
        for step in (-1, 1):
            c = list(point.coords)
            c[d] += step
            q = grid.get((tuple(c), point.workload.name))
            if q is not None and q.invalid is None:
                out.append(q)
    return out


def promotions(sweep, points, table, simmed):
    """The points the sim rung should evaluate next, most useful first: per workload its front
    points, then the near-front ones (each best `scores` first), then the front's grid
    neighbours, none already simulated; the workloads take turns, so a budget is shared
    evenly."""
    grid = {(p.coords, p.workload.name): p for p in points}
    per_workload = []
    for pts, front, near in fronts(sweep, points, table).values():
        score = scores(sweep, pts, table)
        front = sorted(front, key=lambda i: (-score[i], pts[i].key))     # best first
        near = sorted(near, key=lambda i: (-score[i], pts[i].key))
        order = [pts[i] for i in front] + [pts[i] for i in near]
        order += [q for i in front for q in neighbours(pts[i], grid)
                  if q.key in table and table[q.key][1] == "ok"]
        seen, mine = set(simmed), []
        for p in order:
            if p.key not in seen:
                seen.add(p.key)
                mine.append(p)
        per_workload.append(mine)
    chosen, seen = [], set()
    for i in range(max((len(m) for m in per_workload), default=0)):
        for mine in per_workload:
            if i < len(mine) and mine[i].key not in seen:
                seen.add(mine[i].key)
                chosen.append(mine[i])
    return chosen


def front_keys(sweep, points, table):
    return {wl: frozenset(pts[i].key for i in front)
            for wl, (pts, front, _) in fronts(sweep, points, table).items()}


def run(sweep, store, executor="process", workers=None, scheduler=None, fn=None,
        show_progress=False, sim=None, log=print):
    """Run the sweep's ladder into `store` (resuming whatever it holds), with a progress bar
    and ETA on stderr if `show_progress`. Returns a summary, which it also records in the
    store's manifest as `last_run`."""
    fn = fn or evaluate_mod.evaluate
    t0 = time.perf_counter()
    points = sweep.points(evaluate_mod.model_version())
    uniq = unique_points(points)
    by_key = {p.key: p for p in uniq}
    invalid = [p for p in uniq if p.invalid is not None]
    store.put_many([_row(p, {"key": p.key, "stage": "roofline", "status": "invalid",
                             "reason": p.invalid, "seconds": 0.0}) for p in invalid])
    valid = [p for p in uniq if p.invalid is None]
    batch = sweep.ladder["batch"]
    tasks = []
    for wl in sweep.workloads:
        pts = [p for p in valid if p.workload.name == wl.name]
        tasks += [[(wl, pts[i:i + batch])] for i in range(0, len(pts), batch)]
    summary = {"points": len(points), "unique": len(uniq), "invalid": len(invalid)}
    with Runner(store, executor, workers, scheduler, fn, show_progress) as runner:
        summary["roofline_new"] = runner.run("roofline", tasks, by_key, "roofline")
        rounds, sim_new = 0, 0
        converged = True
        if sweep.ladder["sim"] if sim is None else sim:
            budget = sweep.ladder["max_sim_points"]
            converged, before = False, None
            while True:
                table = merged(store, uniq)
                now = front_keys(sweep, uniq, table)
                if now == before:            # the last round's SimPy figures kept the front
                    converged = True
                    break
                if rounds >= sweep.ladder["max_rounds"]:
                    break
                before = now
                simmed = store.done("sim") & set(by_key)
                left = None if budget is None else budget - len(simmed)
                todo = promotions(sweep, uniq, table, simmed)
                if not todo:
                    converged = True
                    break
                if left is not None:
                    if left <= 0:
                        break
                    todo = todo[:left]
                rounds += 1
                log(f"sim round {rounds}: {len(todo)} points")
                sim_new += runner.run("sim", sim_tasks(todo), by_key, f"sim round {rounds}")
        summary.update(sim_new=sim_new, sim_rounds=rounds, converged=converged)
    summary["seconds"] = time.perf_counter() - t0
    store.set_manifest("last_run", dict(summary))      # the report's "Last run" line
    return summary


__all__ = ["run", "Store", "store_path"]
