"""Executors: how cells get run (in this process, one subprocess per cell, Ray tasks).

An executor turns cells into rows and knows nothing of result files: the
runner hands it the cells still to do and writes whatever it yields. The
contract (:class:`Executor`) is small so another engine (submitit, a thread
pool over several GPUs) can be added here without touching measurement code:

* ``open()`` / ``close()`` acquire and release what the engine needs;
* ``run_cells(cells, should_stop)`` yields ``(cell, rows)`` as cells finish,
  in any order. A cell that fails yields status rows (``error``, ``oom``,
  ``timeout``) instead of raising. Once ``should_stop()`` is true no new cell
  is started; cells already running are finished and yielded. A
  ``KeyboardInterrupt`` (the second Ctrl-C) must stop running cells at once;
* ``describe()`` says what ran the cells, for the sidecar.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from typing import Any, Callable, Deque, Dict, Iterator, List, Optional, Protocol, Sequence, Tuple, Union

from bench.errors import UserError, one_line
from bench.measure import allocator
from bench.grid import Cell
from bench.run.rows import failure_rows
from bench.run.started import oom_kill_count

Rows = List[Dict[str, Any]]
MeasureFn = Callable[[Cell], Rows]
# A measure function given by import path, "package.module:function", so a
# fresh process (a subprocess, a Ray worker on another machine) can load it.
MeasureSpec = Union[str, MeasureFn, None]
StopFn = Callable[[], bool]

# Limit on an isolated child's start-up (interpreter, torch) when a --timeout is set.
STARTUP_LIMIT_S = 300.0
# How long an isolated child that wrote its rows may take to exit before it is killed.
EXIT_GRACE_S = 30.0
RAY_INSTALL_HINT = "pip install '.[ray]' (or pip install 'ray>=2.9')"


class Executor(Protocol):
    name: str

    def open(self) -> None: ...

    def run_cells(self, cells: Sequence[Cell], should_stop: StopFn) -> Iterator[Tuple[Cell, Rows]]:
        """Yield each cell's rows as it finishes; failures as status rows, never exceptions."""

    def close(self) -> None: ...

    def describe(self) -> Dict[str, Any]: ...


def run_cell_safely(cell: Cell, measure: Optional[MeasureFn] = None) -> Rows:
    """``measure(cell)``, with any failure of the cell turned into a status row.

    A CPU cell whose training memory surely exceeds the free memory is
    refused as ``oom`` without being tried (only for the real measurement):
    on CPU, running out of memory is not an exception but the OOM killer.
    """
    from bench.run.cell import free_memory, is_oom

    if measure is None:
        too_big = predicted_cpu_oom(cell)
        if too_big:
            return failure_rows(cell, "oom", too_big)
        from bench.run.cell import measure_cell as measure
    try:
        return measure(cell)
    except KeyboardInterrupt:
        raise
    except Exception as e:  # noqa: BLE001 - any failure of one cell is recorded, the sweep goes on
        status = "oom" if is_oom(e) else "error"
        free_memory(cell.settings["device"])
        return failure_rows(cell, status, f"{type(e).__name__}: {e}")


def mem_available() -> Optional[int]:
    """Bytes this process can still get without swapping, or None where unknown: the kernel's
    MemAvailable, or less where a memory cgroup (a container, a systemd or batch-system limit) allows less."""
    known = [b for b in (_meminfo_available(), cgroup_room()) if b is not None]
    return min(known) if known else None


def _meminfo_available() -> Optional[int]:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


# (limit, usage, reclaimable page cache in memory.stat) of a cgroup v2 and a v1 memory controller
_CGROUP_FILES = {2: ("memory.max", "memory.current", "inactive_file"),
                 1: ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")}
_UNLIMITED = 1 << 60  # v1 writes "no limit" as 2**63 rounded down to a page


def cgroup_room(proc_cgroup: str = "/proc/self/cgroup", mount: str = "/sys/fs/cgroup") -> Optional[int]:
    """Bytes the memory cgroups of this process (its own and every one above it) still allow, or None
    when none sets a limit (or none can be read). Usage counts without the inactive page cache, which
    the kernel reclaims before it OOM-kills."""
    try:
        with open(proc_cgroup, encoding="utf-8") as f:
            entries = [line.split(":", 2) for line in f.read().splitlines() if line.count(":") >= 2]
    except OSError:
        return None
    rooms = []
    for _, controllers, path in entries:
        if controllers == "":  # v2: "0::/path"
            version, base = 2, mount
        elif "memory" in controllers.split(","):
            version, base = 1, os.path.join(mount, "memory")
        else:
            continue
        folder = os.path.join(base, path.lstrip("/"))
        # A container sees its own group at the mount's root, not at the host's path: walk up to the root.
        while True:
            room = _cgroup_level_room(folder, *_CGROUP_FILES[version])
            if room is not None:
                rooms.append(room)
            parent = os.path.dirname(os.path.normpath(folder))
            if os.path.normpath(folder) == os.path.normpath(base) or parent == folder:
                break
            folder = parent
    return min(rooms) if rooms else None


def _cgroup_level_room(folder: str, limit_file: str, usage_file: str, cache_key: str) -> Optional[int]:
    try:
        with open(os.path.join(folder, limit_file), encoding="ascii") as f:
            limit_text = f.read().strip()
        if limit_text == "max" or int(limit_text) >= _UNLIMITED:
            return None
        with open(os.path.join(folder, usage_file), encoding="ascii") as f:
            usage = int(f.read().strip())
    except (OSError, ValueError):
        return None
    cache = 0
    try:
        with open(os.path.join(folder, "memory.stat"), encoding="ascii") as f:
            cache = next((int(line.split()[1]) for line in f if line.split()[:1] == [cache_key]), 0)
    except (OSError, ValueError, IndexError):
        pass
    return max(0, int(limit_text) - usage + min(cache, usage))


def predicted_cpu_oom(cell: Cell, available: Optional[int] = None) -> str:
    """Why a CPU cell cannot fit in memory ('' when it may), from analytic counts only.

    A training step keeps every conv/linear output for the backward pass, so
    activations per image x batch x bytes per element is a lower bound on its
    memory (BatchNorm and ReLU outputs, gradients and weights come on top).
    Only that sure case is refused; anything closer is left to be tried.
    """
    s = cell.settings
    if s.get("device") != "cpu":
        return ""
    batches = []
    if s.get("train_step"):
        batches.append(("train step", min(s.get("batch_sizes") or [1])))
    train = s.get("train")
    if isinstance(train, dict):
        from bench.train.recipe import resolve

        try:
            config = resolve(train)
        except ValueError:
            config = None
        if config is not None and (config.resize or 32) == cell.model.input_size:
            batches.append(("training", config.batch_size if config.train_subset is None
                            else min(config.batch_size, config.train_subset)))
    if not batches:
        return ""
    available = mem_available() if available is None else available
    if not available:
        return ""
    from models import model_complexity

    acts = model_complexity(cell.model).acts
    width = 2 if s.get("precision") in ("bf16", "fp16") else 4
    what, batch = max(batches, key=lambda wb: wb[1])
    need = acts * batch * width
    if need <= available:
        return ""
    return (f"predicted out of memory, not tried: the {what} at batch {batch} keeps at least "
            f"{need / 2 ** 30:.1f} GiB of activations ({acts:,} per image x {width} bytes) and the machine has "
            f"{available / 2 ** 30:.1f} GiB available; use smaller batches")


def measure_path(measure: MeasureSpec) -> Optional[str]:
    """The import path of a measure function, for processes that must import it themselves."""
    if measure is None or isinstance(measure, str):
        return measure
    module, name = getattr(measure, "__module__", None), getattr(measure, "__qualname__", "")
    if not module or module == "__main__" or "<" in name:
        raise ValueError(f"measure function {measure!r} must be a module-level function of an importable module")
    return f"{module}:{name}"


def load_measure(spec: MeasureSpec) -> Optional[MeasureFn]:
    if spec is None or callable(spec):
        return spec
    module, _, name = spec.partition(":")
    obj: Any = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


class BaseExecutor:
    """Defaults for the optional parts of :class:`Executor`."""

    name = "base"

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def describe(self) -> Dict[str, Any]:
        return {"name": self.name}


# ---------------------------------------------------------------------- serial
class SerialExecutor(BaseExecutor):
    """Runs cells one after another in this process.

    A cell that gets this process killed (the OOM killer) kills the run; the
    runner marks each cell before it starts (``on_start``) so the next run
    records that cell instead of dying on it again.
    """

    name = "serial"
    in_process = True  # the runner marks each cell as started (see bench.run.started)

    def __init__(self, measure: MeasureSpec = None) -> None:
        self._measure = load_measure(measure)

    def run(self, cell: Cell) -> Rows:
        return run_cell_safely(cell, self._measure)

    def run_cells(self, cells: Sequence[Cell], should_stop: StopFn,
                  on_start: Optional[Callable[[Cell], None]] = None) -> Iterator[Tuple[Cell, Rows]]:
        for cell in cells:
            if should_stop():
                return
            if on_start is not None:
                on_start(cell)
            yield cell, self.run(cell)


# ------------------------------------------------------------ subprocess per cell
class IsolatedExecutor(BaseExecutor):
    """Runs each cell in a fresh Python process.

    A fresh process gives every cell a clean CUDA context and allocator, so
    its peak memory is its own; a segfault, an abort or a hang takes down one
    cell, not the sweep. The child gets the cell as JSON and writes its rows
    to a file (stdout is left to whatever the model code prints). It runs in a
    session of its own so a Ctrl-C at the terminal reaches only the runner,
    which lets the cell finish (first Ctrl-C) or kills it (second).
    """

    name = "isolated"

    def __init__(self, measure: MeasureSpec = None, timeout: Optional[float] = None,
                 python: str = sys.executable) -> None:
        self.measure = measure_path(measure)
        self.timeout = timeout
        self.python = python

    def describe(self) -> Dict[str, Any]:
        return {"name": self.name, "timeout_s": self.timeout}

    def open(self) -> None:
        remove_stale_cell_folders()

    def run_cells(self, cells: Sequence[Cell], should_stop: StopFn) -> Iterator[Tuple[Cell, Rows]]:
        for cell in cells:
            if should_stop():
                return
            yield cell, self.run(cell)

    def run(self, cell: Cell) -> Rows:
        # The folder names this process, so a later run can remove it if this one is SIGKILLed.
        with tempfile.TemporaryDirectory(prefix=f"{CELL_FOLDER_PREFIX}{os.getpid()}-") as tmp:
            cell_file, result_file, started_file, log_file = (
                os.path.join(tmp, n) for n in ("cell.json", "rows.json", "started", "log.txt"))
            with open(cell_file, "w", encoding="utf-8") as f:
                json.dump(cell.to_dict(), f, default=str)
            cmd = [self.python, "-m", "bench.run.executors", "--cell", cell_file, "--out", result_file,
                   "--started", started_file, "--parent", str(os.getpid())]
            if self.measure:
                cmd += ["--measure", self.measure]
            oom_kills = oom_kill_count()
            with open(log_file, "wb") as log:
                proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                        env=_child_env(cell), start_new_session=True,
                                        preexec_fn=_die_with_parent(os.getpid()))
                try:
                    late = self._wait(proc, started_file, result_file)
                except BaseException:  # Ctrl-C twice (or any error here): the cell must not outlive the run
                    _kill_group(proc)
                    raise
            if late:
                return failure_rows(cell, "timeout", late)
            if os.path.exists(result_file):  # written atomically: present means complete
                with open(result_file, encoding="utf-8") as f:
                    return json.load(f)["rows"]
            if proc.returncode == -signal.SIGKILL:  # not ours (a timeout returned above): most likely the OOM killer
                now = oom_kill_count()
                if oom_kills is not None and now is not None and now > oom_kills:
                    return failure_rows(cell, "oom", f"{_describe_exit(proc.returncode)}: killed by the kernel's "
                                                     f"OOM killer (out of memory); last output: {_tail(log_file)}")
                return failure_rows(cell, "error", f"{_describe_exit(proc.returncode)} (if nobody sent it, "
                                                   f"probably out of memory); last output: {_tail(log_file)}")
            return failure_rows(cell, "error", f"{_describe_exit(proc.returncode)}; last output: {_tail(log_file)}")

    def _wait(self, proc: subprocess.Popen, started_file: str, result_file: str) -> str:
        """Wait for the child; kill it and say why when it runs over the timeout ('' when it finished).

        The clock starts when the child begins the cell, so interpreter and
        torch start-up (seconds, longer on a loaded machine) do not count
        against a short --timeout; start-up has a generous limit of its own.
        It stops when the rows are written, before the process has exited.
        """
        if self.timeout is None:
            proc.wait()
            return ""
        spawned = time.monotonic()
        started: Optional[float] = None
        while True:
            try:
                proc.wait(timeout=0.1)
                return ""
            except subprocess.TimeoutExpired:
                pass
            if os.path.exists(result_file):  # done; give the exit a moment, then make sure
                try:
                    proc.wait(timeout=EXIT_GRACE_S)
                except subprocess.TimeoutExpired:
                    _kill_group(proc)
                return ""
            now = time.monotonic()
            if started is None and os.path.exists(started_file):
                started = now
            if started is None and now - spawned > max(STARTUP_LIMIT_S, self.timeout):
                _kill_group(proc)
                return f"its process did not start the cell within {max(STARTUP_LIMIT_S, self.timeout):g} s; killed"
            if started is not None and now - started > self.timeout:
                _kill_group(proc)
                return f"did not finish within --timeout {self.timeout:g} s; its process was killed"


CELL_FOLDER_PREFIX = "bench-cell-"


def remove_stale_cell_folders(parent: Optional[str] = None) -> List[str]:
    """Remove the temporary cell folders of runs that died (SIGKILL) without cleaning up; returns them.

    Folders are named ``bench-cell-PID-...``; one whose PID no longer runs is
    left over. (A reused PID only delays the clean-up to a later run.)
    """
    import shutil

    parent = parent or tempfile.gettempdir()
    removed = []
    try:
        names = os.listdir(parent)
    except OSError:
        return removed
    for name in names:
        pid_text = name[len(CELL_FOLDER_PREFIX):].split("-", 1)[0]
        if not name.startswith(CELL_FOLDER_PREFIX) or not pid_text.isdigit():
            continue
        pid = int(pid_text)
        if pid == os.getpid() or _alive(pid):
            continue
        shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
        removed.append(name)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _child_env(cell: Optional[Cell] = None) -> Dict[str, str]:
    # The child must import what this process imports (the harness, an
    # injected measure function), wherever it was started from. Its heap
    # allocator is the cell's cpu_allocator, given through the environment so
    # glibc starts with it (see bench/measure/allocator.py).
    setting = (cell.settings.get("cpu_allocator") if cell is not None else None) or allocator.DEFAULT_ALLOCATOR
    env = allocator.child_env(setting)
    paths = [p for p in sys.path if p and os.path.isdir(p)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _die_with_parent(parent: int) -> Optional[Callable[[], None]]:
    """On Linux, have the kernel kill the child the moment the runner dies (even by SIGKILL).

    This covers the child's start-up too, before its own parent watch runs.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None

    def set_death_signal() -> None:  # runs in the child between fork and exec
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the runner died before the line above
            os._exit(3)

    return set_death_signal


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def _describe_exit(code: Optional[int]) -> str:
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"cell process died with {name} ({-code})"
    return f"cell process exited with code {code} without writing results"


def _tail(path: str, limit: int = 300) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4096))
            lines = [ln.strip() for ln in f.read().decode("utf-8", "replace").splitlines() if ln.strip()]
    except OSError:
        return "(none)"
    return lines[-1][-limit:] if lines else "(none)"


def _child_main(argv: Optional[List[str]] = None) -> int:
    """Entry point of an isolated cell: ``python -m bench.run.executors --cell C --out R``."""
    p = argparse.ArgumentParser(prog="python -m bench.run.executors", description="run one cell (used by --isolate)")
    p.add_argument("--cell", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--measure", default=None)
    p.add_argument("--started", default=None, help="file to create when the cell starts (for the timeout)")
    p.add_argument("--parent", type=int, default=None)
    args = p.parse_args(argv)
    if args.parent:
        _exit_with_parent(args.parent)
    from bench.results.files import write_json_atomic

    with open(args.cell, encoding="utf-8") as f:
        cell = Cell.from_dict(json.load(f))
    measure = load_measure(args.measure)
    import bench.run.cell  # noqa: F401 - imported before the clock starts: start-up is not the cell's time
    if args.started:
        open(args.started, "w").close()
    rows = run_cell_safely(cell, measure)
    write_json_atomic(args.out, {"rows": rows})
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # the rows are safe; skip interpreter teardown (slow with torch loaded, and may crash)


def _exit_with_parent(parent: int) -> None:
    """Stop when the runner dies (a SIGKILLed runner cannot kill its cells)."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(3)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


# ------------------------------------------------------------------------- Ray
def import_ray():
    try:
        import ray
    except ImportError:
        raise UserError(f"--executor ray needs Ray, which is not installed: {RAY_INSTALL_HINT}") from None
    return ray


def _ray_cell_task(cell_dict: Dict[str, Any], measure: MeasureSpec, isolate: bool,
                   timeout: Optional[float]) -> Dict[str, Any]:
    """Body of one Ray task: a cell's rows, plus the worker's environment.

    With ``isolate`` the cell runs in a child process of the worker, exactly
    as ``--isolate`` does on one machine: the same per-cell timeout (its clock
    starting with the cell, not with the worker), the same crash containment.
    """
    from bench.run import environment

    cell = Cell.from_dict(cell_dict)
    if isolate:
        rows = IsolatedExecutor(measure=measure, timeout=timeout).run(cell)
    else:
        rows = run_cell_safely(cell, load_measure(measure))
    try:
        env = environment.capture(["ray-worker"])
    except Exception as e:  # noqa: BLE001 - the rows matter more than the provenance
        env = {"hostname": platform.node(), "error": str(e)}
    env["cuda_visible_devices"] = os.environ.get("CUDA_VISIBLE_DEVICES")
    return {"rows": rows, "environment": env}


def _runtime_env(address: Optional[str]) -> Dict[str, Any]:
    """How Ray workers get this harness's code.

    A local instance's workers share this machine: putting the source folder
    on their path is enough. A cluster's workers may not share a filesystem,
    so the two packages are shipped to them (``py_modules``); they need only
    the dependencies (torch, torchvision, fvcore, ...) installed.
    """
    import bench
    import models

    bench_dir = os.path.dirname(os.path.abspath(bench.__file__))
    models_dir = os.path.dirname(os.path.abspath(models.__file__))
    # Workers start with cpu_allocator: tuned's thresholds (the default); a
    # cpu_allocator: system cell needs its own process there (--isolate).
    tuned = allocator.child_env("tuned", {})
    if address is None:
        paths = [os.path.dirname(bench_dir)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])
        return {"env_vars": {"PYTHONPATH": os.pathsep.join(paths), **tuned}}
    return {"py_modules": [bench_dir, models_dir], "env_vars": tuned}


class RayExecutor(BaseExecutor):
    """Runs cells as Ray tasks on an existing cluster (``address``) or a local one.

    GPU cells ask for ``num_gpus=1`` (Ray sets ``CUDA_VISIBLE_DEVICES`` so each
    sees one GPU), CPU cells for ``threads`` CPUs (1 when unset). Finished
    rows come back to the driver, which alone writes the CSV, so workers need
    no shared filesystem. At most as many cells are in flight as the cluster
    has room for, so a first Ctrl-C waits only for cells that are running.
    ``isolate`` (implied by a ``timeout``) runs each cell in a child process of
    its worker, as :class:`IsolatedExecutor` does.
    """

    name = "ray"

    def __init__(self, address: Optional[str] = None, measure: MeasureSpec = None, isolate: bool = False,
                 timeout: Optional[float] = None, init_kwargs: Optional[Dict[str, Any]] = None) -> None:
        self.address = address
        self.measure = measure
        self.isolate = isolate or timeout is not None
        self.timeout = timeout
        self.init_kwargs = dict(init_kwargs or {})
        self._ray: Any = None
        self._owns_ray = False
        self._workers: Dict[str, Dict[str, Any]] = {}
        self._resources: Dict[str, float] = {}

    def open(self) -> None:
        ray = self._ray = import_ray()
        if ray.is_initialized():  # a caller (a test, a notebook) already connected
            self._owns_ray = False
        else:
            kwargs = {"include_dashboard": False, "logging_level": "WARNING",
                      "runtime_env": _runtime_env(self.address), **self.init_kwargs}
            try:
                ray.init(address=self.address, **kwargs)
            except (ConnectionError, RuntimeError, ValueError) as e:
                where = f"--ray-address {self.address}" if self.address else "a local Ray cluster"
                raise UserError(f"{where}: cannot connect: {one_line(e, 300)}") from None
            self._owns_ray = True
        self._resources = dict(ray.cluster_resources())

    def close(self) -> None:
        if self._ray is not None and self._owns_ray and self._ray.is_initialized():
            self._ray.shutdown()
        self._ray = None

    def describe(self) -> Dict[str, Any]:
        return {"name": self.name, "address": self.address or "local", "isolate": self.isolate,
                "timeout_s": self.timeout, "cluster_resources": self._resources,
                "workers": list(self._workers.values())}

    @staticmethod
    def request(cell: Cell) -> Dict[str, float]:
        """The Ray resources one cell asks for."""
        if cell.settings["device"] == "cuda":
            return {"num_gpus": 1, "num_cpus": 1}
        return {"num_gpus": 0, "num_cpus": int(cell.settings.get("threads") or 1)}

    def _check_fits(self, cells: Sequence[Cell]) -> None:
        gpus = self._resources.get("GPU", 0)
        if gpus < 1 and any(c.settings["device"] == "cuda" for c in cells):
            raise UserError(f"--executor ray: cells ask for device: cuda but the Ray cluster "
                            f"({self.address or 'local'}) has no GPUs; start workers with GPUs or use --device cpu")

    def run_cells(self, cells: Sequence[Cell], should_stop: StopFn) -> Iterator[Tuple[Cell, Rows]]:
        ray = self._ray
        if ray is None:
            raise RuntimeError("RayExecutor.open() was not called")
        self._check_fits(cells)
        options: Dict[str, Any] = {"max_retries": 0}  # a crashing cell is recorded, not retried three times
        task = ray.remote(_ray_cell_task)
        pending: Deque[Cell] = deque(cells)
        in_flight: Dict[Any, Tuple[Cell, Dict[str, float]]] = {}
        used = {"num_gpus": 0.0, "num_cpus": 0.0}
        capacity = {"num_gpus": self._resources.get("GPU", 0.0), "num_cpus": self._resources.get("CPU", 1.0)}
        # An isolated cell's child process imports the measure function by name.
        measure = measure_path(self.measure) if self.isolate else self.measure

        def fits(req: Dict[str, float]) -> bool:
            if not in_flight:
                return True  # always make progress, even if the request exceeds the cluster
            return all(used[k] + req[k] <= capacity[k] for k in used)

        try:
            while pending or in_flight:
                while pending and not should_stop() and fits(self.request(pending[0])):
                    cell = pending.popleft()
                    req = self.request(cell)
                    req["num_cpus"] = min(req["num_cpus"], max(1, capacity["num_cpus"]))  # never unschedulable
                    ref = task.options(**options, **req).remote(cell.to_dict(), measure, self.isolate, self.timeout)
                    in_flight[ref] = (cell, req)
                    for k in used:
                        used[k] += req[k]
                if not in_flight:
                    return
                # A short wait so the Ctrl-C handler runs promptly between waits.
                ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=0.5)
                for ref in ready:
                    cell, req = in_flight.pop(ref)
                    for k in used:
                        used[k] -= req[k]
                    yield cell, self._collect(ref, cell)
        finally:
            for ref in in_flight:  # stopped early (second Ctrl-C, an error): leave nothing running
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001 - best effort on the way out
                    pass

    def _collect(self, ref: Any, cell: Cell) -> Rows:
        ray = self._ray
        try:
            result = ray.get(ref)
        except Exception as e:  # noqa: BLE001 - a worker death or a Ray failure is this cell's failure
            message = one_line(e)
            return failure_rows(cell, "error", f"Ray task failed: {type(e).__name__}: {message}")
        env = result.get("environment") or {}
        self._workers.setdefault(f"{env.get('hostname')}:{env.get('cuda_visible_devices')}", env)
        return result["rows"]


if __name__ == "__main__":
    sys.exit(_child_main())
