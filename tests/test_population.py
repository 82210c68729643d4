"""Populations: vmapped training equals separate runs; per-member learning rates; XOR solved."""

import json
import os
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxprop as jp
from jaxprop.data import xor
from jaxprop.train import init_state
from jaxprop.plots import population_histogram as plot_population
from jaxprop.runs import population_records
from jaxprop.scale.population import PopulationResult, fit_population, init_population

X, T = (jnp.asarray(a) for a in xor())
MODEL = jp.mlp([2, 4, 1], "sigmoid", "sigmoid", init="normal")  # the classic 2-4-1 sigmoid network


def _reference(factory, epochs, loss="sse_half"):
    """One network trained on its own, ``(seed, lr) -> (params, losses)``, compiled once.

    It starts like ``jaxprop train --seed SEED`` (``init_state``) and runs its own scan loop
    with ``factory(lr)`` (the learning rate is a traced argument, so one compilation serves all).
    """
    loss_and_grad = jp.loss_and_grad_fn(MODEL, loss)

    @jax.jit
    def train(key, lr):
        opt = factory(lr)
        params = init_state(MODEL, opt, key).params

        def step(carry, _):
            p, s = carry
            value, g = loss_and_grad(p, X, T)
            u, s = opt.update(g, s, p)
            return (optax.apply_updates(p, u), s), value

        (params, _), losses = jax.lax.scan(step, (params, opt.init(params)), length=epochs)
        return params, losses

    return lambda seed, lr: train(jax.random.key(seed), lr)


def test_init_population_is_one_init_per_key():
    pop = init_population(MODEL, jax.random.key(7), 3)
    keys = jax.random.split(jax.random.key(7), 3)
    assert pop[0]["W"].shape == (3, 2, 4) and pop[2]["b"].shape == (3, 1)
    chex.assert_trees_all_close(jax.tree.map(lambda a: a[1], pop), MODEL.init(keys[1]))
    with pytest.raises(ValueError, match="positive int"):
        init_population(MODEL, jax.random.key(0), 0)


def test_members_equal_separately_trained_networks():
    res = fit_population(MODEL, "sse_half", 0.5, (X, T), seeds=[3, 5, 11], epochs=100,
                         record_losses=True)
    train_one = _reference(optax.sgd, 100)
    for i, seed in enumerate([3, 5, 11]):
        p, losses = train_one(seed, 0.5)
        chex.assert_trees_all_close(jax.tree.map(lambda a: a[i], res.params), p,
                                    rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(res.losses[i], losses, rtol=1e-5, atol=1e-7)
        final = jp.get_loss("sse_half").value(MODEL.apply(p, X), T)
        np.testing.assert_allclose(res.final_loss[i], final, rtol=1e-5)


@pytest.mark.long
@pytest.mark.x64
@pytest.mark.parametrize("factory", [None, optax.adam])
def test_lr_sweep_members_use_their_own_learning_rate(factory):
    lrs = [0.01, 0.1, 1.0]
    res = fit_population(MODEL, "sse_half", factory, (X, T), seeds=[2, 2, 2], lrs=lrs,
                         epochs=100)
    np.testing.assert_array_equal(res.lrs, lrs)
    train_one = _reference(factory or optax.sgd, 100)
    for i, lr in enumerate(lrs):
        p, _ = train_one(2, lr)
        chex.assert_trees_all_close(jax.tree.map(lambda a: a[i], res.params), p,
                                    rtol=2e-5, atol=2e-6)
    assert len(set(np.round(res.final_loss, 6))) == 3  # same start, different learning rates


@pytest.mark.long
def test_xor_solved_count_matches_predictions(tmp_path):
    res = fit_population(MODEL, "sse_half", 0.5, (X, T), n=48, key=jax.random.key(1),
                         epochs=1500)
    y = jax.vmap(MODEL.apply, in_axes=(0, None))(res.params, X)  # (48, 4, 1)
    right_side = np.all((np.asarray(y) > 0.5) == (np.asarray(T) > 0.5), axis=(1, 2))
    np.testing.assert_array_equal(res.solved, right_side)
    assert 0 < res.solved.sum() <= 48
    np.testing.assert_allclose(res.accuracy, np.mean((np.asarray(y) > 0.5) == (T > 0.5), (1, 2)))
    plot_population(res, tmp_path / "losses.png")
    assert (tmp_path / "losses.png").read_bytes()[:4] == b"\x89PNG"


def test_records_are_json_with_diverged_members_as_null():
    res = PopulationResult(None, np.array([0.1, np.nan]), np.array([1.0, np.nan]),
                           np.array([0, 1]), np.array([0.1, 10.0]), None)
    records = population_records(res)
    assert records[1] == {"seed": 1, "lr": 10.0, "status": "diverged", "final_loss": None,
                          "accuracy": None}  # issue 11: each member says how it ended
    assert records[0]["status"] == "finished"
    json.dumps(records, allow_nan=False)


def test_bad_population_arguments_are_reported():
    with pytest.raises(ValueError, match="disagree"):
        fit_population(MODEL, "sse_half", 0.1, (X, T), n=3, seeds=[1, 2], epochs=1)
    with pytest.raises(ValueError, match="optax alias"):
        fit_population(MODEL, "sse_half", optax.sgd(0.1), (X, T), lrs=[0.1, 0.2], epochs=1)
    with pytest.raises(ValueError, match="positive"):
        fit_population(MODEL, "sse_half", None, (X, T), lrs=[0.1, -1.0], epochs=1)
    with pytest.raises(ValueError, match="epochs"):
        fit_population(MODEL, "sse_half", 0.1, (X, T), n=2, epochs=0)


def test_write_population_run_for_the_cli(tmp_path):
    from jaxprop.runs import population_run

    lrs = [0.5, 2.0]
    cfg = dict(dataset="xor", data_dir=None, csv=None, label_column=None, seed=5, hidden=[4],
               activation="sigmoid", output_activation="sigmoid", loss="sse_half",
               init="normal", optimizer="sgd", lr=0.1, epochs=400, batch_size=None,
               drop_last=False, log_every=400, out=str(tmp_path))  # the classic 2-4-1 network
    m = population_run(cfg, population=3, lrs=lrs)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(m))
    members = saved["population"]
    assert [(r["seed"], r["lr"]) for r in members] == [(5, 0.5), (6, 0.5), (7, 0.5),
                                                       (5, 2.0), (6, 2.0), (7, 2.0)]
    assert saved["solved"] == sum(r["accuracy"] == 1.0 for r in members)
    assert (tmp_path / "population_losses.png").exists()


def test_lr_sweep_argument():
    from jaxprop.cli.train import parse_lr_sweep

    assert parse_lr_sweep("0.5,2") == [0.5, 2.0]
    for bad in ("", "0.1,x", "0.1,-1", "nan"):
        with pytest.raises(ValueError, match="lr-sweep"):
            parse_lr_sweep(bad)


def test_cli_population_and_lr_sweep(tmp_path, capsys):
    from jaxprop.cli import main

    out = tmp_path / "pop"
    assert main(["train", "--population", "4", "--lr-sweep", "0.5,2", "--epochs", "300",
                 "--seed", "3", "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert [(r["seed"], r["lr"]) for r in m["population"]] == [
        (s, lr) for lr in (0.5, 2.0) for s in (3, 4, 5, 6)]
    assert m["solved"] == sum(r["accuracy"] == 1.0 for r in m["population"])
    assert (out / "population_losses.png").exists()
    for args in (["--population", "0"], ["--lr-sweep", "1,,2"], ["--population", "2",
                                                                   "--data-parallel"]):
        assert main(["train", *args, "--out", str(tmp_path / "bad")]) == 2
        assert "error" in capsys.readouterr().err


def test_population_compile_options_and_no_losses_unless_recorded():
    from jaxprop.scale.population import population_compiler_options

    x, t = xor()
    model = jp.mlp([2, 4, 1], "sigmoid", "sigmoid", init="normal")
    res = jp.fit_population(model, "sse_half", 0.5, (x, t), n=3, epochs=5,
                            compiler_options=None)
    assert res.losses is None and res.final_loss.shape == (3,)
    assert population_compiler_options(17, 4, 10, 2) is not None  # tiny run: fast compile
    assert population_compiler_options(17, 4, 10_000, 1000) is None  # long run: optimise


def test_members_trained_in_thread_groups_equal_one_group(monkeypatch):
    from jaxprop.scale import population

    x, t = xor()
    model = jp.mlp([2, 4, 1], "sigmoid", "sigmoid", init="normal")
    kw = dict(n=130, epochs=30, record_losses=True)
    assert population.population_threads(130, 17, 4) == min(2, os.cpu_count() or 1)
    monkeypatch.setattr(population, "population_threads", lambda *a: 2)  # 65 + 65
    split = jp.fit_population(model, "sse_half", 0.5, (x, t), **kw)
    monkeypatch.setattr(population, "population_threads", lambda *a: 3)  # 44 + 44 + 42 + pad
    padded = jp.fit_population(model, "sse_half", 0.5, (x, t), **kw)
    monkeypatch.setattr(population, "population_threads", lambda *a: 1)
    whole = jp.fit_population(model, "sse_half", 0.5, (x, t), **kw)
    for res in (split, padded):
        assert res.losses.shape == (130, 30)
        np.testing.assert_array_equal(res.final_loss, whole.final_loss)
        chex.assert_trees_all_equal(res.params, whole.params)


def test_a_learning_rate_sweep_compiles_once_and_leaks_no_tracer(monkeypatch):
    """Every member shares one inject_hyperparams optimizer (its rate lives in the member's
    state): a second sweep of the same size reuses the compiled program."""
    import sys

    from jaxprop.train.compile import CompiledPrograms

    compiled = CompiledPrograms(maxsize=16)  # the population's own store, fresh for this test
    monkeypatch.setattr(sys.modules["jaxprop.scale.population"], "_COMPILED", compiled)
    with jax.checking_leaks():
        first = fit_population(MODEL, "sse_half", optax.sgd, (X, T), lrs=[0.1, 0.5], epochs=5)
    again = fit_population(MODEL, "sse_half", optax.sgd, (X, T), lrs=[0.2, 0.3], epochs=5)
    assert len(compiled) == 1
    assert not np.array_equal(first.final_loss, again.final_loss)  # the rates took effect


def test_running_out_of_memory_is_told_by_the_status_code(monkeypatch):
    """XLA's RESOURCE_EXHAUSTED (a real one: an allocation of 2**62 bytes) becomes one line
    that says to train fewer; another runtime error stays itself, whatever its message says."""
    population = sys.modules["jaxprop.scale.population"]

    def huge(*args):
        return jnp.zeros((1 << 62,), jnp.uint8)

    monkeypatch.setattr(population, "_compiled_train", lambda *a: huge)
    with pytest.raises(ValueError, match=r"^out of memory training 3 networks at once \("
                                         r"RESOURCE_EXHAUSTED.*\); train fewer$"):
        fit_population(MODEL, "sse_half", 0.5, (X, T), n=3, epochs=2)

    def internal(*args):
        raise jax.errors.JaxRuntimeError("INTERNAL: the driver ran out of memory", 13)

    monkeypatch.setattr(population, "_compiled_train", lambda *a: internal)
    with pytest.raises(jax.errors.JaxRuntimeError, match="INTERNAL"):
        fit_population(MODEL, "sse_half", 0.5, (X, T), n=3, epochs=2)
    coded = jax.errors.JaxRuntimeError("anything", 8)
    if hasattr(coded, "error_code_string"):  # jaxlib >= 0.9.2 carries the status code
        assert population._out_of_memory(coded)
    assert population._out_of_memory(RuntimeError("RESOURCE_EXHAUSTED: older jaxlibs"))


def test_population_sizes_and_epochs_follow_the_integer_policy():
    for bad in (True, 1.0, np.bool_(True), "2"):
        with pytest.raises(ValueError, match="positive int"):
            init_population(MODEL, jax.random.key(0), bad)
        with pytest.raises(ValueError, match="epochs must be an integer"):
            fit_population(MODEL, "sse_half", 0.1, (X, T), n=2, epochs=bad)
    res = fit_population(MODEL, "sse_half", 0.1, (X, T), n=np.int64(2), epochs=np.int32(3),
                         record_losses=True)
    assert res.losses.shape == (2, 3)


def test_memory_free_is_the_devices_limit_else_the_hosts(monkeypatch):
    """check_population_memory's budget: a GPU's bytes_limit (jaxprop.device.memory), else the
    host's available memory."""
    from jaxprop import device

    monkeypatch.setattr(device, "memory", lambda d: {"bytes_limit": 123, "bytes_in_use": 7})
    assert device.device_memory_bytes() == 123
    monkeypatch.setattr(device, "memory", lambda d: None)  # the CPU reports none
    host = device.device_memory_bytes()
    assert host is None or (isinstance(host, int) and host > 2**20)
    monkeypatch.setattr(sys.modules["jaxprop.train.memory"], "device_memory_bytes",
                        lambda: 2**20)
    with pytest.raises(ValueError, match="out of memory: a population of 100,000 networks"):
        jp.fit_population(MODEL, "sse_half", 0.1, (X, T), n=100_000, epochs=1)
