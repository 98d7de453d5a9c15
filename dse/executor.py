"""Where a sweep's tasks run: one `concurrent.futures` interface for all of them.

- `process` (default): a local process pool (spawned workers, so no state leaks from the
  driver). A worker that dies abruptly breaks the pool (`BrokenProcessPool`); the driver
  rebuilds it and resubmits what the store does not hold yet.
- `dask`: `distributed.Client.get_executor()`, which is `concurrent.futures`-compatible, on a
  `LocalCluster` of `workers` single-threaded worker processes or on the scheduler at
  `--scheduler tcp://host:8786`. Dask reruns a finished task when its worker dies; the store
  makes that harmless.
- `serial`: in the driver's own process (debugging, profiling).
"""

import multiprocessing
import os
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager

from bitlut.errors import UserError

KINDS = ("process", "dask", "serial")


class SerialExecutor:
    """Runs each task when it is submitted; its futures are already done."""

    def submit(self, fn, *args, **kwargs):
        f = Future()
        try:
            f.set_result(fn(*args, **kwargs))
        except BaseException as e:         # noqa: BLE001  (delivered through the future)
            f.set_exception(e)
        return f

    def shutdown(self, wait=True, cancel_futures=False):
        pass


def default_workers():
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
               else os.cpu_count() or 1)


@contextmanager
def executor(kind="process", workers=None, scheduler=None):
    """A `concurrent.futures`-style executor of `kind`; closed (cluster included) on exit."""
    workers = workers or default_workers()
    if kind not in KINDS:
        raise UserError(f"--executor must be one of {', '.join(KINDS)}, not {kind!r}")
    if scheduler and kind != "dask":
        raise UserError(f"--scheduler must go with --executor dask, not --executor {kind}")
    if kind == "serial":
        yield SerialExecutor()
    elif kind == "process":
        ex = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
        try:
            yield ex
        finally:
            ex.shutdown(wait=True, cancel_futures=True)
    else:
        with _dask(workers, scheduler) as ex:
            yield ex


@contextmanager
def _dask(workers, scheduler):
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise UserError("--executor dask needs the `distributed` package (pip install "
                        "distributed), not missing") from None
    cluster = None
    if scheduler:
        try:
            client = Client(scheduler, timeout=30)
        except OSError as e:
            raise UserError(f"--scheduler must be a reachable Dask scheduler, not {scheduler!r} "
                            f"({e})") from None
    else:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=None)
        client = Client(cluster)
    try:
        # pure=False: every submission is its own task; the store, not Dask's key cache, keeps
        # results unique. retries: a task whose worker died is rerun elsewhere.
        yield client.get_executor(pure=False, retries=2)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
