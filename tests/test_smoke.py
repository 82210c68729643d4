"""Smoke tests: one gradient against jax.grad; what importing jaxprop does to the process."""

import gc
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

import jaxprop as jp


@pytest.mark.x64
def test_mlp_gradient_matches_jax_grad():
    model = jp.mlp([3, 5, 2], activation="tanh", output_activation="identity", dtype=jnp.float64)
    params = model.init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (4, 3), jnp.float64)
    t = jax.random.normal(jax.random.key(2), (4, 2), jnp.float64)
    value, grads = jp.value_and_grad(model, "mse", params, x, t)
    loss = jp.get_loss("mse")
    ref_value, ref_grads = jax.value_and_grad(lambda p: loss.value(model.apply(p, x), t))(params)
    assert jnp.allclose(value, ref_value)
    for g, r in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads), strict=True):
        assert jnp.allclose(g, r, rtol=1e-10, atol=1e-12)


# What importing jaxprop does to the process: nothing. A fresh process (this one has imported
# everything) sets its own umask, then records whether the garbage collector was on at every
# import jaxprop's names trigger.
IMPORT_PROBE = r"""
import gc, json, os, sys, tempfile
os.umask(0o027)


class Probe:
    gc_off_during = []

    def find_spec(self, name, path=None, target=None):
        if not gc.isenabled():
            self.gc_off_during.append(name)
        return None


sys.meta_path.insert(0, Probe())
import jaxprop as jp
jax_at_import = "jax" in sys.modules
model = jp.mlp([2, 3, 1], "tanh", "sigmoid")  # loads jaxprop's modules, JAX with them
from jaxprop.checkpoint import write_atomic
d = tempfile.mkdtemp()
path = write_atomic(os.path.join(d, "f.bin"), b"x")
umask = os.umask(0o022)
print("RESULT " + json.dumps({
    "gc_enabled": gc.isenabled(), "gc_off_during": Probe.gc_off_during[:5],
    "frozen": gc.get_freeze_count(), "umask": umask, "mode": os.stat(path).st_mode & 0o777,
    "jax_at_import": jax_at_import}))
"""


def test_importing_jaxprop_changes_nothing_process_wide():
    out = subprocess.run([sys.executable, "-c", IMPORT_PROBE], capture_output=True, text=True,
                         timeout=300, check=True).stdout
    r = json.loads(out.split("RESULT ")[1])
    assert r["gc_enabled"] and r["gc_off_during"] == [] and r["frozen"] == 0
    assert r["umask"] == 0o027 and r["mode"] == 0o640  # the process's umask, read at the write
    assert not r["jax_at_import"]  # the names load on first use


def test_a_written_file_gets_the_umask_of_the_moment(tmp_path):
    from jaxprop.checkpoint import write_atomic

    old = os.umask(0o077)
    try:
        mode = os.stat(write_atomic(tmp_path / "a", b"x")).st_mode & 0o777
        os.umask(0o002)
        mode2 = os.stat(write_atomic(tmp_path / "b", b"x")).st_mode & 0o777
    finally:
        os.umask(old)
    assert (mode, mode2) == (0o600, 0o664)


def test_public_names_and_submodules_load_on_first_use():
    assert set(jp.__all__) <= set(dir(jp))
    assert all(getattr(jp, name) is not None for name in jp.__all__)
    assert jp.data.xor is jp.data.synthetic.xor and callable(jp.train.step_key)
    with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
        jp.no_such_name  # noqa: B018


COMMAND_PROBE = IMPORT_PROBE.split("import jaxprop as jp")[0] + r"""
from jaxprop.cli import main
try:
    main(["train", "--help"])
except SystemExit:
    pass
print("RESULT " + json.dumps({"gc_enabled": gc.isenabled(), "off": Probe.gc_off_during}))
"""


def test_the_command_pauses_the_collector_only_while_it_imports():
    """main() loads the subcommand (JAX with it) with the collector off, and leaves it as it
    found it."""
    from jaxprop.cli import main

    out = subprocess.run([sys.executable, "-c", COMMAND_PROBE], capture_output=True, text=True,
                         timeout=300, check=True).stdout
    r = json.loads(out.split("RESULT ")[1])
    assert r["gc_enabled"] and {"jax", "jaxprop.cli.train"} <= set(r["off"])
    gc.disable()
    try:
        with pytest.raises(SystemExit):
            main(["devices", "--help"])
        assert not gc.isenabled()
    finally:
        gc.enable()
    with pytest.raises(SystemExit):
        main(["devices", "--help"])
    assert gc.isenabled() and gc.get_freeze_count() == 0
