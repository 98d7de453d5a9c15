"""The result store: one SQLite file per sweep, written by the driver alone.

    results(key, stage, status, workload, point, metrics, seconds, PRIMARY KEY (key, stage))
    manifest(name PRIMARY KEY, value)

`key` is the point's content hash (`dse.sweep.point_key`), `status` "ok" | "invalid" |
"failed", `point` and `metrics` canonical JSON (`dse.keys.dumps`, so equal results are equal
bytes). Each batch of results is one transaction with `INSERT ... ON CONFLICT DO NOTHING`: a
sweep killed at any moment leaves whole batches only, and a result computed twice (a Dask worker
that died after finishing, a rerun) is stored once. Exactly-once comes from the key, not from
the scheduler. Workers return plain dicts and never open the store, so no shared file system
is needed.
"""

import json
import sqlite3
from pathlib import Path

from dse import keys

SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    key TEXT NOT NULL, stage TEXT NOT NULL, status TEXT NOT NULL, workload TEXT NOT NULL,
    point TEXT NOT NULL, metrics TEXT NOT NULL, seconds REAL NOT NULL,
    PRIMARY KEY (key, stage));
CREATE TABLE IF NOT EXISTS manifest (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class Store:
    """The store at `path` (created with its folder if missing)."""

    def __init__(self, path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)

    def close(self):
        self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def put_many(self, rows):
        """Insert results [{key, stage, status, workload, point, metrics|reason, seconds}] in
        one transaction; rows whose (key, stage) is stored already are skipped. Returns how many
        were new."""
        data = [(r["key"], r["stage"], r["status"], r["workload"], keys.dumps(r["point"]),
                 keys.dumps(r["metrics"] if r["status"] == "ok" else {"reason": r["reason"]}),
                 float(r["seconds"])) for r in rows]
        before = self.db.total_changes
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.executemany("INSERT INTO results VALUES (?, ?, ?, ?, ?, ?, ?) "
                                "ON CONFLICT (key, stage) DO NOTHING", data)
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return self.db.total_changes - before

    def done(self, stage):
        """Keys with a stored result at `stage`."""
        return {k for (k,) in self.db.execute("SELECT key FROM results WHERE stage = ?",
                                              (stage,))}

    def rows(self, stage=None):
        """Stored results as dicts, ordered by (stage, key): the order is the content's, not
        the order they finished in, so anything rendered from it is reproducible."""
        q = "SELECT key, stage, status, workload, point, metrics, seconds FROM results"
        args = ()
        if stage is not None:
            q, args = q + " WHERE stage = ?", (stage,)
        out = []
        for k, st, status, wl, point, metrics, sec in self.db.execute(q + " ORDER BY stage, key",
                                                                       args):
            out.append({"key": k, "stage": st, "status": status, "workload": wl,
                        "point": json.loads(point), "metrics": json.loads(metrics),
                        "metrics_json": metrics, "seconds": sec})
        return out

    def count(self, stage=None):
        if stage is None:
            return self.db.execute("SELECT COUNT(*) FROM results").fetchone()[0]
        return self.db.execute("SELECT COUNT(*) FROM results WHERE stage = ?",
                               (stage,)).fetchone()[0]

    def set_manifest(self, name, value):
        self.db.execute("INSERT INTO manifest VALUES (?, ?) ON CONFLICT (name) DO UPDATE "
                        "SET value = excluded.value", (name, keys.dumps(value)))

    def manifest(self):
        return {n: json.loads(v) for n, v in
                self.db.execute("SELECT name, value FROM manifest ORDER BY name")}
