"""``jaxprop train --data-parallel`` across two processes (jax.distributed, gloo collectives) on
127.0.0.1 only, two CPU devices each: the loss of one process on one device; process 0 alone
writes the run folder."""

import json
import os
import socket
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = ["-m", "jaxprop", "train", "--dataset", "digits", "--epochs", "3", "--batch-size", "0",
         "--log-every", "1", "--no-plots"]


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(devices: int, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    env.update(PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", **extra)
    return env


@pytest.mark.long
def test_two_processes_on_loopback_equal_one_device(tmp_path):
    address = f"127.0.0.1:{_free_loopback_port()}"
    # process 0 from the flags, process 1 from the environment variables
    p0 = subprocess.Popen(
        [sys.executable, *TRAIN, "--data-parallel", "--coordinator", address,
         "--num-processes", "2", "--process-id", "0", "--out", str(tmp_path / "run")],
        env=_env(2), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    p1 = subprocess.Popen(
        [sys.executable, *TRAIN, "--data-parallel", "--out", str(tmp_path / "run1")],
        env=_env(2, JAX_COORDINATOR_ADDRESS=address, JAX_NUM_PROCESSES="2", JAX_PROCESS_ID="1"),
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out0, err0 = p0.communicate(timeout=240)
        out1, err1 = p1.communicate(timeout=60)
    finally:
        for p in (p0, p1):
            if p.poll() is None:
                p.kill()
    assert p0.returncode == 0, err0[-2000:]
    assert p1.returncode == 0, err1[-2000:]
    one = subprocess.run([sys.executable, *TRAIN, "--out", str(tmp_path / "one")], env=_env(1),
                         cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert one.returncode == 0, one.stderr[-2000:]

    m2 = json.loads((tmp_path / "run" / "metrics.json").read_text())
    m1 = json.loads((tmp_path / "one" / "metrics.json").read_text())
    assert m2["processes"] == 2 and "x4" in m2["device"] and "x1" in m1["device"]
    assert m2["status"] == m1["status"] == "finished" and m2["epoch"] == 3
    # 1437 examples padded to 1440 over 4 devices, masked: the same loss, to float32 rounding
    assert abs(m2["train_loss"] - m1["train_loss"]) <= 1e-5 * m1["train_loss"]
    assert abs(m2["test_loss"] - m1["test_loss"]) <= 1e-5 * m1["test_loss"]
    # process 0 wrote the folder and printed the table; process 1 wrote and printed nothing
    assert (tmp_path / "run" / "checkpoint.npz").exists()
    assert not (tmp_path / "run1").exists()
    assert "train" in out0 and "train" not in out1


# --------------------------------------------------------------------------------------------
# Faults (issue #22): a lost peer, settings that differ, a run that cannot be joined

FAULT = ["-m", "jaxprop", "train", "--dataset", "digits", "--batch-size", "64", "--no-plots",
         "--data-parallel", "--num-processes", "2"]


def _pair(tmp_path, address, *extra0, extra1=(), out1="run1"):
    """Processes 0 and 1 of a run on ``address`` (one CPU device each)."""
    procs = []
    for pid, extra, out in ((0, extra0, "run"), (1, extra1, out1)):
        procs.append(subprocess.Popen(
            [sys.executable, *FAULT, "--coordinator", address, "--process-id", str(pid),
             "--out", str(tmp_path / out), *extra],
            env=_env(1), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True))
    return procs


def _finish(procs, timeout=240):
    results = []
    try:
        for p in procs:
            results.append((p.returncode if p.wait(timeout=timeout) is not None else None,
                            *p.communicate()))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return results


@pytest.mark.long
def test_a_lost_peer_stops_the_run_in_one_line_and_resume_finishes_it(tmp_path):
    import time

    address = f"127.0.0.1:{_free_loopback_port()}"
    args = ("--epochs", "60", "--log-every", "5", "--peer-timeout", "20")
    p0, p1 = _pair(tmp_path, address, *args, extra1=args)
    history, deadline = tmp_path / "run" / "history.jsonl", time.time() + 120
    while not (history.exists() and history.stat().st_size):
        assert p0.poll() is None and time.time() < deadline, p0.communicate()
        time.sleep(0.05)
    p1.kill()
    t0 = time.time()
    (rc, _, err), = _finish([p0], timeout=60)
    assert rc == 1 and time.time() - t0 < 30, err[-2000:]
    assert "lost a process of the multi-process run" in err and "Traceback" not in err, err
    assert "--resume" in err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    records = [json.loads(line) for line in history.read_text().splitlines()]
    assert metrics["status"] == "interrupted" and metrics["epoch"] == records[-1]["epoch"] < 60
    # both processes again, from the checkpoint: the run finishes
    address = f"127.0.0.1:{_free_loopback_port()}"
    resume = ["--resume", str(tmp_path / "run")]
    procs = [subprocess.Popen(
        [sys.executable, "-m", "jaxprop", "train", *resume, "--data-parallel",
         "--coordinator", address, "--num-processes", "2", "--process-id", str(pid),
         "--no-plots"], env=_env(1), cwd=tmp_path, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True) for pid in (0, 1)]
    for rc, _, err in _finish(procs):
        assert rc == 0, err[-2000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "finished" and metrics["epoch"] == 60


@pytest.mark.long
def test_processes_started_with_different_settings_are_refused(tmp_path):
    address = f"127.0.0.1:{_free_loopback_port()}"
    procs = _pair(tmp_path, address, "--epochs", "3", "--seed", "1",
                  extra1=("--epochs", "4", "--seed", "1"))
    for rc, _, err in _finish(procs, timeout=120):
        assert rc == 2, err[-2000:]
        assert "started with different settings (epochs)" in err, err[-2000:]
    assert not (tmp_path / "run" / "checkpoint.npz").exists()


@pytest.mark.long
def test_a_run_that_cannot_be_joined_says_why_in_one_line(tmp_path):
    import socket

    # only process 0 is started: it waits --join-timeout, then stops (was SIGABRT after 300 s)
    address = f"127.0.0.1:{_free_loopback_port()}"
    p0 = subprocess.Popen([sys.executable, *FAULT, "--epochs", "1", "--coordinator", address,
                           "--process-id", "0", "--join-timeout", "3", "--out", "run"],
                          env=_env(1), cwd=tmp_path, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
    (rc, _, err), = _finish([p0], timeout=120)
    assert rc == 2 and "not every process joined within 3 s" in err, err[-2000:]
    assert "Check failure" not in err and not (tmp_path / "run").exists()
    # a coordinator host that does not resolve, a port another program holds
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        for address, message in (("bogus host:1234", "cannot resolve the host 'bogus host'"),
                                 (f"127.0.0.1:{port}", "process 0 cannot listen there")):
            run = subprocess.run([sys.executable, *FAULT, "--epochs", "1", "--coordinator",
                                  address, "--process-id", "0", "--out", "run"], env=_env(1),
                                 cwd=tmp_path, capture_output=True, text=True, timeout=120)
            assert run.returncode == 2 and message in run.stderr, run.stderr[-2000:]
            assert len(run.stderr.strip().splitlines()) == 1, run.stderr


@pytest.mark.long
def test_ctrl_c_to_one_process_stops_both(tmp_path):
    """SIGINT to process 1 alone: it leaves at once (130), process 0 stops at its next
    collective (1), the folder interrupted (both used to hang, then abort)."""
    import signal
    import time

    address = f"127.0.0.1:{_free_loopback_port()}"
    args = ("--epochs", "100000", "--log-every", "5")
    p0, p1 = _pair(tmp_path, address, *args, extra1=args)
    history, deadline = tmp_path / "run" / "history.jsonl", time.time() + 120
    while not (history.exists() and history.stat().st_size):
        assert p0.poll() is None and time.time() < deadline, p0.communicate()
        time.sleep(0.05)
    p1.send_signal(signal.SIGINT)
    (rc1, _, err1), (rc0, _, err0) = _finish([p1, p0], timeout=60)
    assert rc1 == 130 and "process 1 stopped by SIGINT" in err1, err1[-2000:]
    assert rc0 == 1 and "lost a process" in err0, err0[-2000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "interrupted"
