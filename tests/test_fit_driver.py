"""``fit_state``'s host driver: stopping before, during and between chunks (which state it keeps),
the callback's early stop, ``losses_out``, a given state that training donates, the divergence
guard's arithmetic."""

import sys
import time

import chex
import jax
import numpy as np
import pytest

import jaxprop as jp
from jaxprop.train import TrainingInterrupted, as_optimizer, fit_state, init_state
from jaxprop.train.chunks import ChunkRunner
from jaxprop.train.compile import CompiledPrograms

from jaxprop.bench.numpy_baseline import XOR_T, XOR_X

X, T = XOR_X.astype(np.float32), XOR_T.astype(np.float32)
MODEL = jp.mlp([2, 3, 1], "tanh", "sigmoid")
FIT = sys.modules["jaxprop.train.fit"]


def _fit(**options):
    options.setdefault("key", jax.random.key(0))
    return fit_state(MODEL, "sse_half", 0.5, (X, T), **options)


def test_should_stop_before_the_first_chunk_keeps_the_start():
    with pytest.raises(TrainingInterrupted, match="after epoch 0") as info:
        _fit(epochs=6, log_every=2, should_stop=lambda: True)
    err = info.value
    assert int(err.state.epoch) == 0
    assert err.history.records == [] and err.history.losses.size == 0
    assert err.history.compile_time == 0.0  # asked before anything compiled


def test_should_stop_between_chunks_keeps_the_last_whole_chunk():
    records = []
    with pytest.raises(TrainingInterrupted) as info:
        _fit(epochs=8, log_every=2, callback=lambda state, record: records.append(record),
             should_stop=lambda: len(records) >= 2)
    err = info.value
    assert int(err.state.epoch) == 4
    assert [r["epoch"] for r in err.history.records] == [2, 4]
    assert err.history.losses.shape == (4,)
    full, _ = _fit(epochs=4, log_every=2)
    chex.assert_trees_all_equal(err.state.params, full.params)


def test_should_stop_during_a_compilation_abandons_it(monkeypatch):
    store = CompiledPrograms(maxsize=4)
    monkeypatch.setattr(FIT, "_COMPILED", store)
    compile_now = ChunkRunner._lower_and_compile

    def slow_compile(self, *args):
        time.sleep(0.3)  # longer than a poll: should_stop is asked meanwhile
        return compile_now(self, *args)

    monkeypatch.setattr(ChunkRunner, "_lower_and_compile", slow_compile)
    asked = []

    def should_stop():  # "go" before the first chunk, "stop" while it compiles
        asked.append(1)
        return len(asked) > 1

    with pytest.raises(TrainingInterrupted) as info:
        _fit(epochs=4, log_every=2, should_stop=should_stop)
    err = info.value
    assert int(err.state.epoch) == 0 and err.history.records == []
    assert err.history.compile_time > 0  # the abandoned compilation's seconds count
    assert len(store) == 0  # nothing half-built is kept


def test_a_callback_stops_early_after_losses_out_has_the_chunk():
    losses_out, seen = [], []

    def callback(state, record):
        seen.append((len(losses_out), record["epoch"], int(state.epoch)))
        return record["epoch"] >= 4

    state, history = _fit(epochs=10, log_every=2, callback=callback, losses_out=losses_out)
    assert seen == [(1, 2, 2), (2, 4, 4)] and int(state.epoch) == 4
    assert [a.shape for a in losses_out] == [(2,), (2,)]
    np.testing.assert_array_equal(np.concatenate(losses_out), history.losses)


def test_a_given_state_stays_valid_when_training_donates(monkeypatch):
    monkeypatch.setattr(FIT, "DONATE_MIN_BYTES", 0)  # donate even this small state
    given = init_state(MODEL, as_optimizer(0.5), jax.random.key(0))

    def host(state):  # (jax 0.8 cannot device_get a typed key: compare its data)
        return jax.device_get(state._replace(key=jax.random.key_data(state.key)))

    before = host(given)
    kept = []
    state, _ = _fit(epochs=4, log_every=2, state=given, key=None,
                    callback=lambda state, record: kept.append(state))
    chex.assert_trees_all_equal(host(given), before)  # not donated: still readable
    assert all(isinstance(leaf, np.ndarray) for leaf in jax.tree.leaves(kept[0].params))
    assert int(kept[0].epoch) == 2  # a host copy that survived the next chunk's donation
    chex.assert_trees_all_equal(kept[-1].params, jax.device_get(state.params))


def test_the_divergence_guard_names_the_first_bad_epoch():
    first_bad = FIT._first_bad_epoch
    nan, inf = float("nan"), float("inf")
    assert first_bad(np.array([1.0, 2.0, 3.0]), 0.5) is None
    assert first_bad(np.array([1.0, nan, inf]), 0.5) == 1
    assert first_bad(np.array([inf, 2.0]), nan) == 0
    assert first_bad(np.array([1.0, 2.0]), nan) == 2  # only the evaluation after the chunk


def test_a_divergence_keeps_the_finite_losses_of_its_chunk():
    from types import SimpleNamespace

    def diverged(epoch, bad, losses, train_loss):
        log = FIT._Log(SimpleNamespace(compile_time=0.5), None)
        return FIT._diverged(epoch, bad, np.array(losses), train_loss, None, log)

    err = diverged(10, 1, [1.0, float("inf"), 3.0], 0.5)  # a chunk of epochs 11-13
    assert (err.epoch, err.value) == (12, float("inf"))
    assert err.history.losses.tolist() == [1.0] and err.history.compile_time == 0.5
    err = diverged(10, 2, [1.0, 2.0], float("nan"))  # only the evaluation after the chunk
    assert err.epoch == 12 and np.isnan(err.value)
    assert err.history.losses.tolist() == [1.0, 2.0]
    assert "kept the parameters from epoch 0" in str(err)


def _count_compilations(monkeypatch):
    """A fresh store for fit's programs, and the list each compilation appends its length to."""
    monkeypatch.setattr(FIT, "_COMPILED", CompiledPrograms(maxsize=8))
    compile_now, lengths = ChunkRunner._lower_and_compile, []

    def counted(self, state, n_epochs):
        lengths.append(n_epochs)
        return compile_now(self, state, n_epochs)

    monkeypatch.setattr(ChunkRunner, "_lower_and_compile", counted)
    return lengths


def test_the_default_log_every_compiles_once(monkeypatch):
    lengths = _count_compilations(monkeypatch)
    _, history = _fit(epochs=15)  # ceil(15 / 10) = 2 would run 2, 2, ..., 2, 1: two programs
    assert lengths == [1]
    assert [r["epoch"] for r in history.records] == list(range(1, 16))
    assert history.losses.shape == (15,) and history.compile_time > 0
    lengths.clear()
    _, history = _fit(epochs=40)  # ceil(40 / 10) divides 40: the usual 10 chunks
    assert lengths == [4] and len(history.records) == 10


def test_an_explicit_log_every_keeps_its_ragged_last_chunk(monkeypatch):
    lengths = _count_compilations(monkeypatch)
    _, history = _fit(epochs=15, log_every=4)
    assert [r["epoch"] for r in history.records] == [4, 8, 12, 15]
    assert lengths == [4, 3]


def test_a_resumed_run_also_compiles_once_by_default(monkeypatch):
    part, _ = _fit(epochs=37, log_every=37)
    lengths = _count_compilations(monkeypatch)
    _, history = _fit(epochs=100, state=part, key=None)  # 63 to go: 9 chunks of 7
    assert lengths == [7]
    assert [r["epoch"] for r in history.records] == list(range(44, 101, 7))


def test_the_default_log_every_splits_the_remaining_epochs_evenly():
    default = FIT._default_log_every
    assert default(10_000) == 1000 and default(12) == 2 and default(12, start=6) == 2
    assert default(15) == 1 and default(13) == 1 and default(100, start=37) == 7
    # a prime over MAX_DEFAULT_CHUNKS: ten chunks and a shorter last one (never one long chunk)
    assert default(997) == 100 and default(101) == 11
    for epochs in range(1, 400):
        for start in sorted({0, 1, epochs // 2, epochs - 1} - {epochs}):
            remaining, every = epochs - start, default(epochs, start)
            chunks = -(-remaining // every)
            assert chunks <= FIT.MAX_DEFAULT_CHUNKS, (epochs, start, every)
            assert chunks >= min(FIT.MIN_DEFAULT_CHUNKS, remaining) or every == -(-epochs // 10)
            if remaining % every:  # ragged only when no even split of 5..100 chunks exists
                assert not any(remaining % k == 0 for k in range(
                    min(FIT.MIN_DEFAULT_CHUNKS, remaining), FIT.MAX_DEFAULT_CHUNKS + 1)), epochs
