#!/usr/bin/env python3
"""The first GPU run as one prepared command: seven steps, each capped, none able to stop the next.

    python3 scripts/gpu_run.py                      # on the GPU machine (docs/gpu.md); writes to $OUT
    python3 scripts/gpu_run.py --steps 3,5          # a rerun of named steps only
    python3 scripts/gpu_run.py --device cpu --out DIR --deadline-s 150   # the CPU dry run

Steps, in order of value: 1 preflight (nvidia-smi, versions, every module imports), 2 ceilings
(a few seconds of bf16 matmul and device copy: clocks up, TFLOP/s and GB/s), 3 the headline grid
(grids/gpu-headline.yaml), 4 both profiles at batch 64, 5 resnet18_cifar time to 94% on the
carried CIFAR-10 (grids/gpu-cifar94.yaml), 6 the paired ratio resnext50/resnet50 at batch 1 and
64, 7 a short pytest subset under the machine's torch.

Rules the script keeps, because the machine gives one command 10 minutes and returns only
what lies under $OUT (at most 8 files, 2 folders deep):

* Only the standard library is imported here: it runs under the machine's own ``python3`` and
  installs nothing. Each command is a child process under the same interpreter, in its own
  process group, with ``PYTHONUNBUFFERED=1``, killed (rc 124) at its cap.
* A global deadline (default 480 s) bounds the whole run; each command gets the smaller of its
  cap and what is left, and a step that cannot start in time is recorded as skipped.
* Every command's exit code is logged, and a failed or timed-out step never stops the next.
* ``$OUT`` receives ``summary.txt`` first (rewritten after every command), ``summary.json``,
  and ``gpu-run.tar.gz`` holding everything else (logs, CSVs, sidecars, profiles), rebuilt after
  every command and every 30 s of a long one and replaced atomically: a run killed from
  outside still returns what had finished.
* Provenance: the tree arrives without ``.git``, so the commit comes from ``$BENCH_GIT_COMMIT``
  or ``carry/GIT_COMMIT`` (written by scripts/carry_gpu.sh) and is passed on to the harness.

``--device cpu`` runs the same machinery on a CPU with CPU-sized commands (grids validated with
``--dry-run``, a small profile and paired ratio, a tiny test file); ``--inject 2=fail,3=hang``
replaces steps with a failing or hanging command, which is how the tests prove the rules above.
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CARRY = os.path.join(ROOT, "carry")
SUMMARY_TXT, SUMMARY_JSON, TARBALL = "summary.txt", "summary.json", "gpu-run.tar.gz"
RESERVE_S = 10.0  # kept back from the deadline for the last summary and tarball
MIN_START_S = 5.0  # a command with less than this left is skipped, not started
REFRESH_S = 30.0  # a long command's partial output is packed this often
KILL_GRACE_S = 5.0  # SIGTERM, then SIGKILL after this
TIMEOUT_RC = 124  # what timeout(1) returns: the command ran past its cap
NOT_FOUND_RC = 127  # what a shell returns for a missing program
COMMIT_FORM = re.compile(r"[0-9a-f]{7,40}(-dirty)?")
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# The GPU machine's pytest subset: the tests of the timing, profile and device logic.
GPU_TESTS = ("tests/test_timing.py", "tests/test_kineto.py", "tests/test_profile.py", "tests/test_recipe_device.py",
             "tests/test_measure.py")


@dataclass
class Command:
    label: str
    argv: List[str]
    cap_s: float


@dataclass
class Step:
    number: int
    name: str
    commands: Callable[["Context"], List[Command]]


@dataclass
class Context:
    device: str  # cuda (the real run) or cpu (the dry run)
    work: str  # everything packed into the tarball
    data: str  # CIFAR-10 built from the carried tarball (not packed: 180 MB)
    cifar_tar: str
    python: str = sys.executable

    @property
    def gpu(self) -> bool:
        return self.device == "cuda"

    def bench(self, *args: str) -> List[str]:
        return [self.python, os.path.join(ROOT, "benchmark.py"), *args]

    def me(self, *args: str) -> List[str]:
        return [self.python, os.path.abspath(__file__), *args]

    def path(self, *parts: str) -> str:
        return os.path.join(self.work, *parts)


# ------------------------------------------------------------------------------------------ steps
def _preflight(c: Context) -> List[Command]:
    query = ("name,uuid,pci.bus_id,driver_version,pstate,power.limit,power.default_limit,power.max_limit,"
             "power.draw,clocks.sm,clocks.mem,clocks.max.sm,clocks.max.mem,clocks.applications.graphics,"
             "ecc.mode.current,ecc.errors.uncorrected.volatile.total,mig.mode.current,temperature.gpu,"
             "memory.total,memory.used,compute_mode,clocks_event_reasons.active")
    return [Command("nvidia-smi", ["nvidia-smi"], 10),
            Command("nvidia-smi query", ["nvidia-smi", f"--query-gpu={query}", "--format=csv"], 10),
            Command("nvidia-smi -q", ["nvidia-smi", "-q", "-d", "POWER,CLOCK,ECC,PERFORMANCE,TEMPERATURE"], 10),
            Command("versions and imports", c.me("probe-versions", "--out", c.path("versions.json")), 40)]


def _ceilings(c: Context) -> List[Command]:
    seconds = "3" if c.gpu else "0.3"
    return [Command("matmul and copy", c.me("probe-ceilings", "--device", c.device, "--seconds", seconds,
                                            "--out", c.path("ceilings.json")), 30)]


def _headline(c: Context) -> List[Command]:
    out = c.path("headline", "gpu-headline.csv")
    if c.gpu:
        return [Command("grid gpu-headline", c.bench("--grid", "grids/gpu-headline.yaml", "--device", "cuda",
                                                     "--out", out, "--no-progress", "--no-report"), 150)]
    return [Command("grid gpu-headline (dry run)", c.bench("--grid", "grids/gpu-headline.yaml", "--device", "cuda",
                                                           "--dry-run", "--out", out), 60)]


def _profiles(c: Context) -> List[Command]:
    if c.gpu:
        models, flags = ("resnet50", "resnext50_32x4d"), ["--batch-size", "64", "--device", "cuda", "--precision",
                                                          "bf16", "--memory-format", "channels_last"]
    else:
        models, flags = ("resnet20",), ["--batch-size", "2", "--device", "cpu", "--threads", "1", "--no-train-step"]
    return [Command(f"profile {m}", c.bench("profile", m, *flags, "--force", "--out",
                                            c.path("profiles", f"{m}.profile.csv")), 45) for m in models]


def _cifar94(c: Context) -> List[Command]:
    build = Command("build cifar-10-batches-py", c.me("probe-cifar", "--tar", c.cifar_tar, "--out", c.data), 45)
    out = c.path("cifar94", "gpu-cifar94.csv")
    if c.gpu:
        # The runner's own per-cell limit records a timeout row before the step's cap kills the run.
        train = c.bench("--grid", "grids/gpu-cifar94.yaml", "--device", "cuda", "--data-root", c.data, "--out", out,
                        "--no-progress", "--no-report", "--timeout", "120")
        return [build, Command("grid gpu-cifar94", train, 130)]
    return [build, Command("grid gpu-cifar94 (dry run)", c.bench("--grid", "grids/gpu-cifar94.yaml", "--device",
                                                                 "cuda", "--dry-run", "--data-root", c.data,
                                                                 "--out", out), 60)]


def _paired(c: Context) -> List[Command]:
    if c.gpu:
        grid, a, b, rounds, calls, batches = "grids/gpu-headline.yaml", "resnet50", "resnext50_32x4d", 20, 10, (1, 64)
    else:
        grid, a, b, rounds, calls, batches = "grids/quick.yaml", "resnet20", "resnet32", 6, 2, (1,)
    return [Command(f"paired {b}/{a} batch {n}", [c.python, "-m", "benchmarks.paired_latency", "--grid", grid,
                                                  "--a", a, "--b", b, "--batch-size", str(n), "--rounds", str(rounds),
                                                  "--calls", str(calls)], 30) for n in batches]


def _pytest(c: Context) -> List[Command]:
    tests = GPU_TESTS if c.gpu else ("tests/test_stats.py",)
    return [Command("pytest subset", [c.python, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests], 60)]


STEPS = (Step(1, "preflight", _preflight), Step(2, "ceilings", _ceilings), Step(3, "headline", _headline),
         Step(4, "profiles", _profiles), Step(5, "cifar94", _cifar94), Step(6, "paired", _paired),
         Step(7, "pytest", _pytest))
INJECTED = {  # --inject N=KIND: what replaces step N's commands
    "fail": "import sys; print('injected failure'); sys.exit(3)",
    "hang": "import os, time; print('injected hang pid', os.getpid(), flush=True); time.sleep(3600)",
}


# ------------------------------------------------------------------------------------------ runner
@dataclass
class Result:
    step: int
    name: str
    label: str
    argv: List[str]
    cap_s: float
    status: str = "pending"  # ok, failed, timeout, skipped (deadline), not-found
    rc: Optional[int] = None
    seconds: float = 0.0
    log: str = ""


@dataclass
class Run:
    out: str
    ctx: Context
    deadline: float  # time.monotonic() value
    started: str
    commit: Optional[str]
    results: List[Result] = field(default_factory=list)
    finished: bool = False
    notes: List[str] = field(default_factory=list)
    child: Optional[subprocess.Popen] = None  # the command running now

    def left(self) -> float:
        return self.deadline - time.monotonic()


def run_command(run: Run, res: Result, log_path: str, max_step_s: Optional[float]) -> None:
    """One child in its own process group, output to its log, killed at its cap; the result filled in."""
    left = run.left() - RESERVE_S
    res.log = os.path.relpath(log_path, run.ctx.work)
    if left < MIN_START_S:  # the deadline is too near to start it: recorded, not attempted
        res.status = "skipped"
        return
    budget = min(res.cap_s, left, *(() if max_step_s is None else (max_step_s,)))
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if run.commit:
        env["BENCH_GIT_COMMIT"] = run.commit
    start = time.monotonic()
    with open(log_path, "ab") as log:
        log.write(f"== {_now()} {res.label}: {' '.join(res.argv)} (cap {budget:.0f} s)\n".encode())
        log.flush()
        try:
            # Its own process group, so a time-out kills what it started too; the same session, so the
            # machine's own clean-up still reaches it if this script is killed first.
            child = subprocess.Popen(res.argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, preexec_fn=os.setpgrp)
        except OSError as e:  # nvidia-smi on a machine without it: logged like any failure
            log.write(f"cannot start: {e}\n".encode())
            res.status, res.rc = "not-found", NOT_FOUND_RC
            return
        run.child = child
        res.rc = _wait(run, child, start + budget)
        run.child = None
        res.seconds = round(time.monotonic() - start, 1)
        res.status = "timeout" if res.rc == TIMEOUT_RC else ("ok" if res.rc == 0 else "failed")
        log.write(f"== exit {res.rc} ({res.status}) after {res.seconds} s\n".encode())


def _wait(run: Run, child: subprocess.Popen, until: float) -> int:
    next_pack = time.monotonic() + REFRESH_S
    while True:
        try:
            return child.wait(timeout=max(0.1, min(until, next_pack) - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        if time.monotonic() >= until:
            _kill_group(child)
            return TIMEOUT_RC
        if time.monotonic() >= next_pack:
            pack(run)  # a long step's rows so far come back even if the machine kills us
            next_pack = time.monotonic() + REFRESH_S


def _kill_group(child: subprocess.Popen) -> None:
    for sig, grace in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, 30.0)):
        try:
            os.killpg(child.pid, sig)
        except ProcessLookupError:
            return
        try:
            child.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def pack(run: Run) -> None:
    """Summary files, then the tarball of the work folder, each replaced atomically."""
    write_summary(run)
    tmp = os.path.join(run.out, "." + TARBALL + ".tmp")
    try:
        with tarfile.open(tmp, "w:gz") as tar:
            tar.add(run.ctx.work, arcname="gpu-run")  # links are stored as links, never followed
        os.replace(tmp, os.path.join(run.out, TARBALL))
    except OSError as e:  # a file replaced under us mid-step: the previous tarball stays, the next pack retries
        print(f"== packing skipped this time: {e}", flush=True)
    finally:
        if os.path.exists(tmp):  # a pack cut short (an error, or a signal) leaves no stray file in $OUT
            os.remove(tmp)


def write_summary(run: Run) -> None:
    data = {"started": run.started, "device": run.ctx.device, "git_commit": run.commit, "finished": run.finished,
            "deadline_left_s": round(run.left(), 1), "notes": run.notes,
            "commands": [vars(r) for r in run.results]}
    _write_atomic(os.path.join(run.out, SUMMARY_JSON), json.dumps(data, indent=1))
    lines = [f"gpu_run.py on {run.ctx.device}, started {run.started}, commit {run.commit or 'unknown'}, "
             f"{'finished' if run.finished else 'running or killed'}, {run.left():.0f} s of the deadline left",
             *run.notes, "", f"{'step':<5}{'name':<11}{'rc':>5}  {'status':<10}{'s':>7}{'cap':>6}  command"]
    for r in run.results:
        rc = "-" if r.rc is None else str(r.rc)
        lines.append(f"{r.step:<5}{r.name:<11}{rc:>5}  {r.status:<10}{r.seconds:>7.1f}{r.cap_s:>6.0f}  {r.label}")
    _write_atomic(os.path.join(run.out, SUMMARY_TXT), "\n".join(lines) + "\n")


def _write_atomic(path: str, text: str) -> None:
    tmp = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def recorded_commit() -> Optional[str]:
    """$BENCH_GIT_COMMIT, else carry/GIT_COMMIT; only a value shaped like a commit hash."""
    value = os.environ.get("BENCH_GIT_COMMIT", "").strip()
    if not value:
        try:
            with open(os.path.join(CARRY, "GIT_COMMIT"), encoding="utf-8") as f:
                value = f.read(100).strip()
        except OSError:
            return None
    return value if COMMIT_FORM.fullmatch(value) else None


def parse_steps(text: Optional[str]) -> List[int]:
    if not text:
        return [s.number for s in STEPS]
    try:
        chosen = sorted({int(t) for t in text.split(",") if t.strip()})
    except ValueError:
        chosen = []
    if not chosen or any(n not in range(1, len(STEPS) + 1) for n in chosen):
        raise SystemExit(f"--steps {text}: expected step numbers 1-{len(STEPS)}, comma-separated, e.g. 3,5")
    return chosen


def parse_inject(text: Optional[str]) -> Dict[int, str]:
    out: Dict[int, str] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        number, _, kind = part.partition("=")
        if not number.strip().isdigit() or kind not in INJECTED:
            raise SystemExit(f"--inject {text}: expected N=fail or N=hang, comma-separated")
        out[int(number)] = kind
    return out


def _out_dir(path: str) -> str:
    """The output folder, made if needed; one that is a symbolic link is refused (we follow none we did not make)."""
    if os.path.islink(path):
        raise SystemExit(f"--out {path}: is a symbolic link; give a real folder")
    os.makedirs(path, exist_ok=True)
    return path


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=os.environ.get("OUT") or os.path.join(ROOT, "out", "gpu-run"),
                   help="folder for summary.txt, summary.json and gpu-run.tar.gz (default $OUT, else out/gpu-run)")
    p.add_argument("--steps", default=None, help="comma-separated step numbers to run (default: all seven)")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="cpu: the dry run (CPU-sized steps)")
    p.add_argument("--deadline-s", type=float, default=480.0, help="global deadline, s (default 480)")
    p.add_argument("--max-step-s", type=float, default=None, help="cap every command at this many seconds")
    p.add_argument("--work", default=None, help="scratch folder packed into the tarball (default: a new one in /tmp)")
    p.add_argument("--data", default="/tmp/gpu-run-data", help="where CIFAR-10 is built (reused when complete)")
    p.add_argument("--cifar-tar", default=os.path.join(CARRY, "cifar10-jpeg.tar.gz"))
    p.add_argument("--inject", default=None, help="N=fail or N=hang, comma-separated (tests)")
    args = p.parse_args(argv)
    chosen, inject = parse_steps(args.steps), parse_inject(args.inject)
    start = time.monotonic()
    out = _out_dir(args.out)
    work = args.work or _new_work_dir()
    ctx = Context(args.device, work, args.data, args.cifar_tar)
    run = Run(out, ctx, start + args.deadline_s, _now(), recorded_commit())
    run.notes.append(f"python {sys.version.split()[0]} at {sys.executable}; steps {','.join(map(str, chosen))}")
    if 5 in chosen:
        run.notes.append(_cifar_note(args.cifar_tar))
    # The planned commands first, all pending, so even a summary read mid-run shows what is to come.
    plan = []
    for step in STEPS:
        if step.number not in chosen:
            continue
        commands = step.commands(ctx)
        if step.number in inject:
            commands = [Command(f"injected {inject[step.number]}", [ctx.python, "-c", INJECTED[inject[step.number]]],
                                commands[0].cap_s)]
        for command in commands:
            plan.append(Result(step.number, step.name, command.label, command.argv, command.cap_s))
    run.results = plan
    os.makedirs(ctx.path("logs"), exist_ok=True)
    pack(run)
    signal.signal(signal.SIGTERM, _stop)
    try:
        for res in plan:
            print(f"== {_now()} step {res.step} {res.name}: {res.label}", flush=True)
            log = ctx.path("logs", f"{res.step}-{res.name}.log")
            run_command(run, res, log, args.max_step_s)
            print(f"== step {res.step} {res.label}: {res.status} rc {res.rc} in {res.seconds} s", flush=True)
            _print_tail(log)
            pack(run)
    except Stopped as stopped:  # killed from outside: end the running step, say so, keep what finished
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut this short
        if run.child is not None:
            _kill_group(run.child)
        run.notes.append(f"stopped by signal {stopped.signum} at {_now()}")
        pack(run)
        return 128 + stopped.signum
    run.finished = True
    pack(run)
    print(open(os.path.join(out, SUMMARY_TXT), encoding="utf-8").read(), flush=True)
    return 0 if all(r.status == "ok" for r in plan) else 1


class Stopped(Exception):
    """SIGTERM arrived; raised wherever the script was (a wait, a pack) and handled once in main()."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _stop(signum, frame) -> None:
    raise Stopped(signum)


def _new_work_dir() -> str:
    import tempfile
    return tempfile.mkdtemp(prefix="gpu-run-")


def _print_tail(log: str, lines: int = 8) -> None:
    try:
        with open(log, "rb") as f:
            f.seek(max(0, os.path.getsize(log) - 4000))
            tail = f.read().decode("utf-8", errors="replace").splitlines()[-lines:]
    except OSError:
        return
    for line in tail:
        print("   | " + line[:200], flush=True)


def _cifar_note(tar: str) -> str:
    if not os.path.isfile(tar):
        return f"CIFAR-10: {tar} is missing (run scripts/carry_gpu.sh here and carry carry/); step 5 fails"
    h = hashlib.sha256()
    with open(tar, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return (f"CIFAR-10: the JPEG re-encoding (quality ~75) {os.path.basename(tar)}, sha256 {h.hexdigest()[:16]}; "
            f"not the official binaries, so gpu-cifar94 accuracies are on that copy")


# ------------------------------------------------------------------------- probes (child processes)
def probe_versions(out: str) -> int:
    """Versions, the device, and an import of every harness module (an optional package missing fails here)."""
    import importlib
    import pkgutil
    import platform

    info: Dict[str, Any] = {"python": sys.version.split()[0], "platform": platform.platform(), "packages": {}}
    for name in ("torch", "torchvision", "numpy", "pandas", "scipy", "matplotlib", "yaml", "tqdm", "pynvml", "PIL",
                 "jinja2", "pytest", "fvcore", "ray", "triton"):
        try:
            info["packages"][name] = getattr(importlib.import_module(name), "__version__", "?")
        except Exception as e:  # noqa: BLE001 - an absent or broken package is a fact to record
            info["packages"][name] = f"absent ({type(e).__name__})"
    import torch

    info["cuda"], info["cudnn"] = torch.version.cuda, torch.backends.cudnn.version()
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info["device"] = {"name": props.name, "capability": f"{props.major}.{props.minor}",
                          "memory_gib": round(props.total_memory / 2**30, 1), "sms": props.multi_processor_count}
    sys.path.insert(0, ROOT)
    failed = {}
    for package in ("bench", "models"):
        module = importlib.import_module(package)
        for m in pkgutil.walk_packages(module.__path__, package + "."):
            try:
                importlib.import_module(m.name)
            except Exception as e:  # noqa: BLE001 - every failing module is listed, not only the first
                failed[m.name] = f"{type(e).__name__}: {e}"
    from bench.run.environment import git_commit

    info["git_commit"], info["import_failures"] = git_commit(), failed
    _dump(out, info)
    return 1 if failed else 0


def probe_ceilings(device: str, seconds: float, out: str) -> int:
    """bf16 matmul TFLOP/s and copy GB/s (bytes read + written), each for ``seconds``: the clocks come up too."""
    import torch

    n, mib = (8192, 2048) if device == "cuda" else (256, 8)
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    src = torch.empty(mib << 18, device=device, dtype=torch.float32)  # mib MiB
    dst = torch.empty_like(src)
    result = {"device": device, "matmul_n": n, "copy_mib": mib, "clocks_before": _clocks(device)}
    result["matmul_tflop_s"] = _rate(device, lambda: a @ a, 2 * n ** 3 / 1e12, seconds)
    result["copy_gb_s"] = _rate(device, lambda: dst.copy_(src), 2 * src.numel() * 4 / 1e9, seconds)
    result["clocks_after"] = _clocks(device)
    _dump(out, result)
    return 0


def _rate(device: str, fn: Callable[[], Any], work: float, seconds: float) -> float:
    """Median work / time over short blocks, after a warm-up of the same length (CUDA events on a GPU)."""
    import torch

    def block(calls: int) -> float:
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(calls):
                fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3
        t = time.perf_counter()
        for _ in range(calls):
            fn()
        return time.perf_counter() - t

    calls = 1
    while block(calls) < 0.05 and calls < 1 << 16:
        calls *= 2
    rates, until = [], time.monotonic() + seconds
    while time.monotonic() < until or len(rates) < 3:
        rates.append(calls * work / block(calls))
    rates.sort()
    return float(f"{rates[len(rates) // 2]:.4g}")


def _clocks(device: str) -> Optional[Dict[str, Any]]:
    if device != "cuda":
        return None
    try:
        import pynvml

        pynvml.nvmlInit()
        h = pynvml.nvmlDeviceGetHandleByIndex(0)
        return {"sm_mhz": pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM),
                "mem_mhz": pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_MEM),
                "temperature_c": pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU),
                "power_w": pynvml.nvmlDeviceGetPowerUsage(h) / 1000}
    except Exception as e:  # noqa: BLE001 - no NVML: the rates stand without the clocks
        return {"nvml_error": f"{type(e).__name__}: {e}"}


def probe_cifar(tar_path: str, out: str) -> int:
    """cifar-10-batches-py under ``out`` from the JPEG tarball (train/<class>/*.jpg, test/<class>/*.jpg).

    The layout the harness reads (bench/train/data.py): five pickled training batches, a test batch
    and batches.meta, ``data`` uint8 rows of 3072 (R, G, B planes of 32x32), ``labels`` ints. Images
    go in name order, then shuffled with seed 0, and the keys in the same order as the shared folder's
    own converter (make_cifar10.py) writes them: the same tarball gives byte-identical files (checked
    once by md5 against that converter's output), so GPU and CPU runs train on the same data. Kept when
    already complete.
    """
    import io

    import numpy as np
    from PIL import Image

    dest = os.path.join(out, "cifar-10-batches-py")
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]
    if all(os.path.isfile(os.path.join(dest, n)) for n in names):
        print(f"{dest}: complete, kept")
        return 0
    if os.path.islink(out) or os.path.islink(dest):
        print(f"{dest}: a symbolic link; refusing to write through it", file=sys.stderr)
        return 2
    splits: Dict[str, List[Any]] = {"train": [], "test": []}
    with tarfile.open(tar_path) as tar:
        for member in tar:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) != 3 or parts[0] not in splits or parts[1] not in CIFAR_CLASSES:
                continue
            with Image.open(io.BytesIO(tar.extractfile(member).read())) as img:
                pixels = np.asarray(img.convert("RGB"), dtype=np.uint8)
            if pixels.shape != (32, 32, 3):
                print(f"{tar_path}: {member.name}: expected a 32x32 image, got {pixels.shape}", file=sys.stderr)
                return 2
            splits[parts[0]].append((member.name, pixels.transpose(2, 0, 1).reshape(-1),
                                     CIFAR_CLASSES.index(parts[1]), f"{parts[1]}_{parts[2]}"))
    if not splits["train"] or not splits["test"]:
        print(f"{tar_path}: expected train/<class>/*.jpg and test/<class>/*.jpg images", file=sys.stderr)
        return 2
    os.makedirs(dest, exist_ok=True)
    train = _shuffled(splits["train"])
    per_batch = -(-len(train[1]) // 5)
    for b in range(5):
        s = slice(b * per_batch, (b + 1) * per_batch)
        _pickle(os.path.join(dest, f"data_batch_{b + 1}"), {"batch_label": f"training batch {b + 1} of 5",
                                                           "labels": train[1][s], "data": train[0][s],
                                                           "filenames": train[2][s]})
    test = _shuffled(splits["test"])
    _pickle(os.path.join(dest, "test_batch"), {"batch_label": "testing batch 1 of 1", "labels": test[1],
                                               "data": test[0], "filenames": test[2]})
    _pickle(os.path.join(dest, "batches.meta"), {"num_cases_per_batch": per_batch,
                                                 "label_names": list(CIFAR_CLASSES), "num_vis": 3072})
    print(f"{dest}: {len(train[1])} training and {len(test[1])} test images")
    return 0


def _shuffled(items: List[Any]):
    import numpy as np

    items = sorted(items, key=lambda t: t[0])
    order = np.random.default_rng(0).permutation(len(items))
    return (np.stack([items[i][1] for i in order]), [items[i][2] for i in order], [items[i][3] for i in order])


def _pickle(path: str, obj: Any) -> None:
    import pickle

    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        pickle.dump(obj, f, protocol=2)
    os.replace(tmp, path)  # a killed build leaves no half file under the final name


def _dump(path: str, obj: Any) -> None:
    text = json.dumps(obj, indent=1, default=str)
    print(text)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def probe_main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="gpu_run.py probe")
    p.add_argument("probe", choices=("probe-versions", "probe-ceilings", "probe-cifar"))
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--tar", default=None)
    a = p.parse_args(argv)
    if a.probe == "probe-versions":
        return probe_versions(a.out)
    if a.probe == "probe-ceilings":
        return probe_ceilings(a.device, a.seconds, a.out)
    if not a.tar or not os.path.isfile(a.tar):
        print(f"{a.tar}: no CIFAR-10 tarball; run scripts/carry_gpu.sh before sending the tree", file=sys.stderr)
        return 2
    return probe_cifar(a.tar, a.out)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1].startswith("probe-"):
        sys.exit(probe_main(sys.argv[1:]))
    sys.exit(main())
