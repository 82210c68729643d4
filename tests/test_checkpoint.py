"""Checkpoints: round trip, atomic save, clear errors for truncated and foreign files."""

import json
import os

import chex
import jax
import numpy as np
import optax
import pytest

import jaxprop as jp
from jaxprop import checkpoint
from jaxprop.train import TrainState, init_state

MODEL = jp.mlp([3, 5, 2], "relu", "identity")
OPT = optax.adam(1e-3)


def _state(seed=0, epoch=0):
    state = init_state(MODEL, OPT, jax.random.key(seed))
    grads = jax.tree.map(lambda p: p * 0 + 0.5, state.params)
    _, opt_state = OPT.update(grads, state.opt_state, state.params)  # non-trivial mu/nu/count
    return state._replace(opt_state=opt_state, epoch=np.int32(epoch))


def test_round_trip_keeps_params_optimizer_state_key_epoch_and_config(tmp_path):
    state = _state(seed=1, epoch=7)
    path = checkpoint.save(tmp_path, state, {"dataset": "xor", "hidden": [5]})
    assert path == tmp_path / "checkpoint.npz"
    with np.load(path, allow_pickle=False) as z:  # plain arrays only, no pickle
        assert "__header__" in z.files
    ck = checkpoint.load(tmp_path)
    assert ck.epoch == 7 and ck.config == {"dataset": "xor", "hidden": [5]}
    restored = ck.restore(init_state(MODEL, OPT, jax.random.key(99)))
    assert isinstance(restored, TrainState)
    chex.assert_trees_all_equal(restored.params, state.params)
    chex.assert_trees_all_equal(restored.opt_state, state.opt_state)
    assert np.array_equal(jax.random.key_data(restored.key), jax.random.key_data(state.key))
    assert int(restored.epoch) == 7


def test_header_records_the_tree_structure(tmp_path):
    checkpoint.save(tmp_path / "c.npz", _state(), {})
    with np.load(tmp_path / "c.npz", allow_pickle=False) as z:
        header = json.loads(z["__header__"].tobytes())
    assert header["format"] == "jaxprop-checkpoint" and header["version"] == 2
    paths = [leaf["path"] for leaf in header["trees"]["params"]["leaves"]]
    assert paths == ["[0]['W']", "[0]['b']", "[2]['W']", "[2]['b']"]
    assert "mu" in json.dumps(header["trees"]["opt_state"])


def test_interrupted_save_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    checkpoint.save(tmp_path, _state(epoch=3), {"run": "old"})

    def crash(f, **arrays):  # write half a file, then die
        f.write(b"PK\x03\x04 partial zip")
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(checkpoint.np, "savez", crash)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(tmp_path, _state(epoch=4), {"run": "new"})
    monkeypatch.undo()
    ck = checkpoint.load(tmp_path)
    assert ck.epoch == 3 and ck.config == {"run": "old"}
    assert os.listdir(tmp_path) == ["checkpoint.npz"]  # the temporary file is gone


def test_truncated_file_is_a_clear_error(tmp_path):
    path = checkpoint.save(tmp_path, _state(), {})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or corrupt") as info:
        checkpoint.load(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("kind", ["npz", "bytes", "json", "version"])
def test_foreign_files_are_rejected(tmp_path, kind):
    path = tmp_path / "checkpoint.npz"
    if kind == "npz":
        np.savez(path, weights=np.ones(3))
        match = "not a jaxprop checkpoint"
    elif kind == "bytes":
        path.write_bytes(b"hello, I am not a zip file")
        match = "truncated or corrupt"
    elif kind == "json":
        np.savez(path, __header__=np.frombuffer(b'{"format": "other"}', np.uint8))
        match = "not a jaxprop checkpoint"
    else:
        header = json.dumps({"format": "jaxprop-checkpoint", "version": 99}).encode()
        np.savez(path, __header__=np.frombuffer(header, np.uint8))
        match = "version 99"
    with pytest.raises(ValueError, match=match) as info:
        checkpoint.load(tmp_path)
    assert str(path) in str(info.value)


def test_missing_file_and_mismatched_model(tmp_path):
    with pytest.raises(FileNotFoundError):
        checkpoint.load(tmp_path / "nothing.npz")
    checkpoint.save(tmp_path, _state(), {})
    other = jp.mlp([3, 6, 2], "relu", "identity")
    with pytest.raises(ValueError, match="shape"):
        checkpoint.load(tmp_path).restore(init_state(other, OPT, jax.random.key(0)))
    with pytest.raises(ValueError, match="do not match"):
        checkpoint.load(tmp_path).restore(init_state(MODEL, optax.sgd(0.1), jax.random.key(0)))


def test_only_our_own_stale_temporaries_are_removed(tmp_path):
    ours = tmp_path / ".checkpoint.npz.k1ll3d.tmp"
    theirs = tmp_path / ".notes.tmp"
    for f in (ours, theirs):
        f.write_bytes(b"x")
    assert checkpoint.remove_stale_temporaries(tmp_path, ["checkpoint.npz"]) == [ours]
    assert theirs.exists() and not ours.exists()


@pytest.mark.parametrize("epoch", [True, -1, 1.5, "3", 2**31])
def test_an_epoch_that_is_not_a_count_is_a_corrupt_header(tmp_path, epoch):
    path = checkpoint.save(tmp_path, _state(epoch=1), {})
    with np.load(path, allow_pickle=False) as z:
        arrays = dict(z)
    header = json.loads(arrays["__header__"].tobytes())
    arrays["__header__"] = np.frombuffer(json.dumps({**header, "epoch": epoch}).encode(),
                                         np.uint8)
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match="corrupt checkpoint header .epoch .* is not a count"):
        checkpoint.load(path)
