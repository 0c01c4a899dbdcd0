"""Where trials run: a local pool of warm worker processes, or a Ray cluster.

Both are `concurrent.futures.Executor`s (`submit(fn, *args) -> Future`,
`shutdown()`), so the search loop does not know which one it drives. A trial
function must be a top-level, picklable function of picklable arguments.

Local workers are started with `spawn` (safe with CUDA and threads) and kept for
the whole search: importing torch costs ~1.6 s per process, so a worker's
first trial pays it and the rest do not. Each worker gets an equal share of the
CPU threads and, when there are GPUs, a GPU of its own.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import threading
import time

from nasdsl.language.errors import NasError
from nasdsl.language.primitives import load_plugins, plugins_of_this_run

EXECUTORS = ("local", "ray")


def make_executor(kind: str = "local", workers: int = 1, address: str | None = None):
    """An executor of `kind` with `workers` trials running at once."""
    if workers < 1:
        raise NasError(f"--workers must be at least 1, got {workers}")
    if kind == "local":
        return local_pool(workers)
    if kind == "ray":
        return RayExecutor(workers, address)
    raise NasError(f"unknown executor `{kind}`", hint=f"choose one of: {', '.join(EXECUTORS)}")


def local_pool(workers: int) -> concurrent.futures.ProcessPoolExecutor:
    context = multiprocessing.get_context("spawn")
    gpus = _gpu_count()
    slots = context.Queue()
    for i in range(workers):
        slots.put(i % gpus if gpus else None)
    threads = max(1, (os.cpu_count() or 1) // workers)
    return WorkerPool(workers, mp_context=context, initializer=_init_worker, initargs=(slots, threads))


class WorkerPool(concurrent.futures.ProcessPoolExecutor):
    """The process pool, with `shutdown(wait=False)` meaning what the search loop needs:
    stop now. Its workers are terminated, not left to finish a trial nobody will record
    (on SIGTERM the search would otherwise wait for them at exit)."""

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        workers = list((self._processes or {}).values())  # the pool's own table of its processes
        super().shutdown(wait=wait, cancel_futures=cancel_futures)
        if not wait:
            for process in workers:
                if process.is_alive():
                    process.terminate()


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _init_worker(slots, threads: int) -> None:
    """Runs once in each new worker: die with the search, claim a GPU (if any) and a
    share of the cores."""
    _die_with_parent()
    load_plugins(plugins_of_this_run())  # the primitives `--plugin` registered in the search process
    gpu = slots.get()
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    import torch

    torch.set_num_threads(threads)


class RayExecutor(concurrent.futures.Executor):
    """Trials as Ray tasks (one GPU each where the cluster has GPUs). Ray is an optional
    extra (`pip install nasdsl[ray]`), imported only when chosen."""

    def __init__(self, workers: int, address: str | None = None):
        try:
            import ray
        except ImportError:
            raise NasError("--executor ray needs Ray, which is not installed",
                           hint="pip install 'nasdsl[ray]' (or use --executor local)") from None
        self._ray = ray
        self._started_here = not ray.is_initialized()
        if self._started_here:
            try:
                ray.init(address=address, num_cpus=None if address else max(workers, os.cpu_count() or 1),
                         include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
            except ConnectionError as err:
                raise NasError(f"cannot reach the Ray cluster at {address}: {err}",
                               hint="start it with `ray start --head` or check --address") from None
        gpus = ray.cluster_resources().get("GPU", 0)
        threads = max(1, int(ray.cluster_resources().get("CPU", 1)) // workers)
        self._options = {"num_gpus": 1 if gpus else 0, "num_cpus": threads, "max_retries": 0}
        self._threads = threads
        self._remote = {}

    def submit(self, fn, /, *args, **kwargs) -> concurrent.futures.Future:
        remote = self._remote.get(fn)
        if remote is None:
            remote = self._remote[fn] = self._ray.remote(_with_threads).options(**self._options)
        return remote.remote(fn, self._threads, *args, **kwargs).future()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if self._started_here:
            self._ray.shutdown()


def _with_threads(fn, threads: int, *args, **kwargs):
    import torch

    torch.set_num_threads(threads)
    return fn(*args, **kwargs)


def _die_with_parent(every: float = 0.5) -> None:
    """A worker whose search is gone (killed with SIGKILL, say) must not train on for
    minutes holding memory: a daemon thread ends the process once its parent changes
    (an orphan is adopted by another process)."""
    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(every)
        os._exit(1)

    threading.Thread(target=watch, name="nasdsl-parent-watchdog", daemon=True).start()
