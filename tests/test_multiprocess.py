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
