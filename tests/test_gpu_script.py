"""scripts/gpu_run.py, the prepared GPU run, exercised on the CPU through its dry run.

What these prove: the script's own machinery (deadline, per-command caps, exit codes in the summary,
a failing or hanging step not stopping the next, the file limits of what comes back, the pack after
every command, the CIFAR-10 build from the JPEG tarball, the commit passed on without .git), with
CPU-sized commands in place of the GPU ones. What only a GPU run can show: that the GPU commands'
caps fit their work on the machine, and the numbers themselves.
"""
import importlib.util
import io
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "gpu_run.py")
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _load_script():
    spec = importlib.util.spec_from_file_location("gpu_run", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_run"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


gpu_run = _load_script()


def tiny_cifar_tar(path, per_class=1, size=32):
    """A CIFAR-10-shaped JPEG tarball: train/<class>/N.jpg and test/<class>/N.jpg, ``per_class`` of each."""
    from PIL import Image

    rng = np.random.default_rng(0)
    with tarfile.open(path, "w:gz") as tar:
        for split in ("train", "test"):
            for cls in CLASSES:
                for i in range(per_class):
                    buf = io.BytesIO()
                    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, "JPEG")
                    info = tarfile.TarInfo(f"{split}/{cls}/{i:04d}.jpg")
                    info.size = buf.tell()
                    buf.seek(0)
                    tar.addfile(info, buf)
    return str(path)


def run_script(tmp_path, *args, timeout=600):
    out = tmp_path / "out"
    cmd = [sys.executable, SCRIPT, "--device", "cpu", "--out", str(out), "--work", str(tmp_path / "work"),
           "--data", str(tmp_path / "data"), "--cifar-tar", tiny_cifar_tar(tmp_path / "tiny.tar.gz"), *args]
    env = dict(os.environ)
    env.pop("OUT", None)
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
    return proc, time.monotonic() - start, out


def returned_files(out):
    """What the device tool would bring back: every file under ``out``, relative."""
    return sorted(os.path.relpath(os.path.join(d, f), out) for d, _, files in os.walk(out) for f in files)


def assert_fits_what_comes_back(out):
    files = returned_files(out)
    assert len(files) <= 8, files
    for f in files:
        assert len(f.split(os.sep)) <= 3, f  # at most 2 folders down
        assert all(re.fullmatch(r"[A-Za-z0-9._-]+", part) for part in f.split(os.sep)), f
    assert "summary.txt" in files and "gpu-run.tar.gz" in files


def summary(out):
    with open(out / "summary.json", encoding="utf-8") as f:
        return json.load(f)


def tar_names(out):
    with tarfile.open(out / "gpu-run.tar.gz") as tar:
        return tar.getnames()


@pytest.mark.slow
def test_the_cpu_dry_run_of_all_seven_steps_finishes_under_its_deadline_within_the_file_limits(tmp_path):
    proc, seconds, out = run_script(tmp_path, "--deadline-s", "300")
    assert seconds < 300, proc.stdout[-2000:]
    assert_fits_what_comes_back(out)
    s = summary(out)
    assert s["finished"] and {r["step"] for r in s["commands"]} == set(range(1, 8))
    assert all(r["rc"] is not None for r in s["commands"]), s["commands"]
    by_label = {r["label"]: r for r in s["commands"]}
    # No nvidia-smi on a CPU machine: logged as a failure of that command alone.
    assert by_label["nvidia-smi"]["status"] in ("not-found", "failed", "ok")
    others = [r for r in s["commands"] if not r["label"].startswith("nvidia-smi")]
    assert all(r["status"] == "ok" for r in others), [(r["label"], r["status"], r["rc"]) for r in others]
    names = tar_names(out)
    for expected in ("gpu-run/versions.json", "gpu-run/ceilings.json", "gpu-run/profiles/resnet20.profile.csv",
                     "gpu-run/logs/6-paired.log", "gpu-run/logs/7-pytest.log"):
        assert expected in names, names
    assert not any("cifar-10-batches-py" in n for n in names)  # the data stays out of what comes back
    with open(tmp_path / "work" / "versions.json", encoding="utf-8") as f:
        assert json.load(f)["import_failures"] == {}


def test_a_failing_step_and_a_timed_out_step_do_not_stop_the_next_and_every_rc_is_in_the_summary(tmp_path):
    proc, seconds, out = run_script(tmp_path, "--steps", "2,3,5", "--inject", "2=fail,3=hang", "--max-step-s", "4",
                                    "--deadline-s", "120")
    assert proc.returncode == 1  # not every step was ok
    assert_fits_what_comes_back(out)
    s = summary(out)
    got = [(r["step"], r["status"], r["rc"]) for r in s["commands"]]
    assert got[:2] == [(2, "failed", 3), (3, "timeout", 124)]
    assert [(step, status) for step, status, _ in got[2:]] == [(5, "ok"), (5, "ok")]  # the data build, the grid
    hang = next(r for r in s["commands"] if r["status"] == "timeout")
    assert 4 <= hang["seconds"] < 4 + gpu_run.KILL_GRACE_S + 5
    text = (out / "summary.txt").read_text()
    assert re.search(r"^2\s+ceilings\s+3\s+failed", text, re.M) and re.search(r"^3\s+headline\s+124\s+timeout",
                                                                            text, re.M)
    assert seconds < 120


def test_the_deadline_skips_what_cannot_start_and_says_so(tmp_path):
    proc, seconds, out = run_script(tmp_path, "--steps", "2,3", "--inject", "2=hang", "--deadline-s",
                                    str(gpu_run.RESERVE_S + gpu_run.MIN_START_S + 4))
    s = summary(out)
    assert [(r["step"], r["status"]) for r in s["commands"]] == [(2, "timeout"), (3, "skipped")]
    assert s["finished"] and seconds < 40


def test_what_finished_is_already_packed_while_a_later_step_runs_and_sigterm_kills_that_step(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    cmd = [sys.executable, SCRIPT, "--device", "cpu", "--out", str(out), "--work", str(work), "--steps", "2,3",
           "--inject", "3=hang", "--deadline-s", "200"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        hang_pid = _wait_for_hang_pid(work / "logs" / "3-headline.log", proc)
        # A kill from outside now (the machine's own limit) would still return step 2 whole.
        assert "gpu-run/ceilings.json" in tar_names(out)
        assert summary(out)["commands"][0]["status"] == "ok"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert any("stopped by signal" in n for n in summary(out)["notes"])
    with pytest.raises(ProcessLookupError):
        os.kill(hang_pid, 0)  # the running step went with it


def _wait_for_hang_pid(log, proc, timeout=120):
    until = time.monotonic() + timeout
    while time.monotonic() < until and proc.poll() is None:
        if log.exists():
            m = re.search(r"injected hang pid (\d+)", log.read_text())
            if m:
                return int(m.group(1))
        time.sleep(0.2)
    raise AssertionError(f"the injected hang never started (script rc {proc.poll()})")


def test_steps_and_injections_are_checked_before_anything_runs():
    assert gpu_run.parse_steps("5,3") == [3, 5] and gpu_run.parse_steps(None) == list(range(1, 8))
    for bad in ("0", "8", "x", ","):
        with pytest.raises(SystemExit, match="expected step numbers 1-7"):
            gpu_run.parse_steps(bad)
    assert gpu_run.parse_inject("2=fail,3=hang") == {2: "fail", 3: "hang"}
    with pytest.raises(SystemExit, match="N=fail or N=hang"):
        gpu_run.parse_inject("2=explode")


def test_the_cifar_build_writes_batches_the_harness_loads_with_the_tarballs_labels(tmp_path):
    from bench.train.data import load_cifar10

    tar = tiny_cifar_tar(tmp_path / "tiny.tar.gz", per_class=2)
    assert gpu_run.probe_cifar(tar, str(tmp_path / "data")) == 0
    with pytest.warns(UserWarning, match="differ from the official"):  # a re-encoded copy, said so
        train, test = load_cifar10(str(tmp_path / "data"), download=False)
    assert len(train.labels) == 20 and len(test.labels) == 20
    assert sorted(train.labels.tolist()) == sorted(list(range(10)) * 2)
    assert tuple(train.images.shape[1:]) == (3, 32, 32)
    before = os.path.getmtime(tmp_path / "data" / "cifar-10-batches-py" / "test_batch")
    assert gpu_run.probe_cifar(tar, str(tmp_path / "data")) == 0  # complete: kept, not rebuilt
    assert os.path.getmtime(tmp_path / "data" / "cifar-10-batches-py" / "test_batch") == before


def test_an_image_of_the_wrong_size_stops_the_build_with_one_line(tmp_path, capsys):
    tar = tiny_cifar_tar(tmp_path / "odd.tar.gz", size=16)
    assert gpu_run.probe_cifar(tar, str(tmp_path / "data")) == 2
    assert "expected a 32x32 image" in capsys.readouterr().err
    assert not (tmp_path / "data" / "cifar-10-batches-py").exists()


def test_without_git_the_commit_comes_from_the_environment_marked_recorded(tmp_path, monkeypatch):
    from bench.run.environment import git_commit

    monkeypatch.setenv("BENCH_GIT_COMMIT", "0123abc")
    assert git_commit(str(tmp_path)) == "0123abc (recorded)"  # tmp_path is no git checkout
    monkeypatch.setenv("BENCH_GIT_COMMIT", "not a commit; rm -rf")
    assert git_commit(str(tmp_path)) is None
    monkeypatch.delenv("BENCH_GIT_COMMIT")
    assert git_commit(str(tmp_path)) is None


def test_the_script_reads_the_commit_the_carry_script_wrote(tmp_path, monkeypatch):
    monkeypatch.delenv("BENCH_GIT_COMMIT", raising=False)
    monkeypatch.setattr(gpu_run, "CARRY", str(tmp_path))
    assert gpu_run.recorded_commit() is None
    (tmp_path / "GIT_COMMIT").write_text("89abcdef0123-dirty\n")
    assert gpu_run.recorded_commit() == "89abcdef0123-dirty"
    monkeypatch.setenv("BENCH_GIT_COMMIT", "fedcba9")
    assert gpu_run.recorded_commit() == "fedcba9"


def test_the_pyproject_torch_floor_is_the_torch_the_minimal_env_installs():
    with open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8") as f:
        floor = re.search(r'"torch>=([0-9.]+)"', f.read()).group(1)
    with open(os.path.join(ROOT, "scripts", "minimal_env.sh"), encoding="utf-8") as f:
        pinned = re.search(r"torch==([0-9.]+)", f.read()).group(1)
    assert pinned.startswith(floor + ".") or pinned == floor


# ------------------------------------------------------------------ docs/gpu.md, generated parts
DOC = os.path.join(ROOT, "docs", "gpu.md")


def steps_table():
    """docs/gpu.md's step table, from the script's own steps as they run on the GPU."""
    ctx = gpu_run.Context("cuda", "/W", "/D", "carry/cifar10-jpeg.tar.gz")
    lines = ["| step | name | command | cap, s |", "|---|---|---|---|"]
    for step in gpu_run.STEPS:
        for c in step.commands(ctx):
            lines.append(f"| {step.number} | {step.name} | {c.label} | {c.cap_s:g} |")
    return "\n".join(lines)



def _block(name):
    text = open(DOC, encoding="utf-8").read()
    m = re.search(rf"<!-- {name}: begin.*?-->\n(.*?)\n<!-- {name}: end -->", text, re.S)
    assert m, f"docs/gpu.md has no {name} block"
    return m.group(1)


@pytest.mark.parametrize("name,make", [("steps", steps_table)])
def test_the_generated_tables_of_docs_gpu_md_match_the_code(name, make):
    assert _block(name) == make(), f"regenerate docs/gpu.md's {name} block:\n{make()}"


if __name__ == "__main__":  # print the generated blocks of docs/gpu.md
    sys.path.insert(0, ROOT)
    print(steps_table())
