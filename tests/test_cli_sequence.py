"""``jaxprop train --dataset text|reverse|sort`` and ``jaxprop generate``: the flags and their
refusals, generation from a run folder's model, and (long) training runs that solve the digit
tasks and beat the unigram baseline on text."""

import json

import jax
import numpy as np
import pytest

from jaxprop import data
from jaxprop.cli import main
from jaxprop.core.network import mlp
from jaxprop.predict import save_predictor
from jaxprop.train.step import TrainState

sequence = pytest.importorskip("jaxprop.core.sequence",
                               reason="the sequence layers (jaxprop.core.sequence) are absent")


def _one_line_error(capsys, argv, needle, code=2):
    capsys.readouterr()
    assert main(argv) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err


@pytest.mark.parametrize("argv, needle", [
    (["--dataset", "moons", "--text", "a.txt"], "--text applies only to --dataset text"),
    (["--dataset", "xor", "--context", "8"], "--context applies only to --dataset"),
    (["--dataset", "text", "--hidden", "64"], "--hidden describes an MLP"),
    (["--dataset", "reverse", "--model", "embed(16)-dense(11)", "--blocks", "2"],
     "--blocks size the default GPT that --model replaces"),
    (["--dataset", "sort", "--heads", "0"], "--heads must be a positive integer"),
    (["--dataset", "text", "--text", "missing.txt", "--out", "r"], "no such file"),
    (["--dataset", "reverse", "--context", "7", "--out", "r"], "context must be even"),
    (["--dataset", "reverse", "--features", "30", "--heads", "4", "--out", "r"],
     "not a multiple of heads=4"),
    (["--dataset", "reverse", "--loss", "mse", "--out", "r"], "does not take integer labels"),
])
def test_bad_sequence_flags_are_one_line(tmp_path, monkeypatch, capsys, argv, needle):
    monkeypatch.chdir(tmp_path)
    _one_line_error(capsys, ["train", *argv, "--no-plots"], needle)
    assert not (tmp_path / "r").exists()


def _state(params, epoch=0):
    return TrainState(params, (), jax.random.key(0), np.int32(epoch), [])


@pytest.fixture(scope="module")
def runs_folder(tmp_path_factory):
    """A sequence run's model.npz (an untrained tiny GPT on the reverse task) and an MLP's."""
    tmp = tmp_path_factory.mktemp("gen")
    ds = data.load("reverse", n_samples=10, context=4)
    model = sequence.gpt(ds.num_classes, blocks=1, features=8, heads=2, context=4)
    params, state, _ = model.init(jax.random.key(0), (4,))
    (tmp / "seq").mkdir()
    save_predictor(tmp / "seq" / "model.npz", model, _state(params)._replace(model_state=state),
                   ds, {"loss": "sparse_softmax_cross_entropy"})
    xor = data.load("xor")
    net = mlp([2, 3, 1], "tanh", "identity")
    (tmp / "xor").mkdir()
    save_predictor(tmp / "xor" / "model.npz", net, _state(net.init(jax.random.key(0), (2,))[0]),
                   xor, {"loss": "bce_with_logits"})
    return tmp


def test_generate_continues_the_prompt_with_the_runs_vocabulary(runs_folder, capsys):
    capsys.readouterr()
    argv = ["generate", "--run", str(runs_folder / "seq"), "--prompt", "123456=",
            "--tokens", "9"]
    assert main([*argv, "--temperature", "0"]) == 0
    greedy = capsys.readouterr().out.rstrip("\n")
    assert greedy.startswith("123456=") and len(greedy) == 7 + 9
    assert set(greedy) <= set("0123456789=")
    assert main([*argv, "--temperature", "0"]) == 0
    assert capsys.readouterr().out.rstrip("\n") == greedy  # greedy: no randomness
    assert main([*argv, "--seed", "4"]) == 0
    first = capsys.readouterr().out
    assert main([*argv, "--seed", "4"]) == 0
    assert capsys.readouterr().out == first  # the seed fixes the samples


@pytest.mark.parametrize("run, prompt, needle", [
    ("seq", "12a4=b", "2 character(s) the run's vocabulary lacks: 'ab'"),
    ("seq", "", "the prompt is empty"),
    ("xor", "12", "not a sequence model"),
    ("nowhere", "12", "no such run folder"),
])
def test_generate_refusals_are_one_line(runs_folder, capsys, run, prompt, needle):
    _one_line_error(capsys, ["generate", "--run", str(runs_folder / run), "--prompt", prompt,
                             "--tokens", "3"], needle)


def test_predict_on_a_sequence_run_points_to_generate(runs_folder, capsys):
    np.save(runs_folder / "tokens.npy", np.zeros((2, 4), np.int32))
    _one_line_error(capsys, ["predict", "--run", str(runs_folder / "seq"), "--npy",
                             str(runs_folder / "tokens.npy")], "jaxprop generate")


# --------------------------------------------------------------------------------------------
# Training (long)


@pytest.mark.long
@pytest.mark.parametrize("task", ["reverse", "sort"])
def test_the_digit_tasks_are_solved(tmp_path, capsys, task):
    """The default run solves the task (>= 99% token accuracy on the test strings, and on
    their answers alone); about a minute on 2 CPU cores, most of it compiling."""
    from jaxprop.data.text import answer_accuracy
    from jaxprop.predict import load_predictor

    out = tmp_path / task
    assert main(["train", "--dataset", task, "--no-plots", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_accuracy"] >= 0.99, metrics
    ds = data.load(task)
    p = load_predictor(out)
    logits = p.model.apply(p.params, ds.x_test, p.state)
    assert answer_accuracy(logits, ds.y_test) >= 0.99
    capsys.readouterr()
    assert main(["generate", "--run", str(out), "--prompt", "31415926=", "--tokens", "8",
                 "--temperature", "0"]) == 0
    want = "62951413" if task == "reverse" else "11234569"
    assert capsys.readouterr().out.strip() == "31415926=" + want
    assert main(["generate", "--run", str(out), "--prompt", "31415926=", "--tokens", "8",
                 "--temperature", "0", "--cache"]) == 0  # a KV cache: the same answer
    assert capsys.readouterr().out.strip() == "31415926=" + want


@pytest.mark.long
def test_a_text_run_beats_the_unigram_baseline_resumes_and_generates(tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text("the cat sat on the mat. the dog sat on the log. " * 120, encoding="utf-8")
    out = tmp_path / "run"
    small = ["--blocks", "1", "--features", "32", "--heads", "2", "--context", "16",
             "--lr", "3e-3"]
    assert main(["train", "--dataset", "text", "--text", str(text), *small, "--epochs", "3",
                 "--no-plots", "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert "perplexity" in table and "unigram" in table
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_loss"] < 0.7 * metrics["unigram_loss"]
    assert metrics["test_perplexity"] == pytest.approx(np.exp(metrics["test_loss"]))
    assert metrics["config"]["text"] == str(text) and metrics["config"]["context"] == 16
    assert "test_perplexity" in (out / "history.csv").read_text().splitlines()[0]
    assert main(["train", "--resume", str(out), "--epochs", "4", "--no-plots"]) == 0
    assert json.loads((out / "metrics.json").read_text())["epoch"] == 4
    capsys.readouterr()
    assert main(["generate", "--run", str(out), "--prompt", "the c", "--tokens", "20",
                 "--temperature", "0.5", "--seed", "3"]) == 0
    sampled = capsys.readouterr().out
    assert sampled.startswith("the c")
    assert main(["generate", "--run", str(out), "--prompt", "the c", "--tokens", "20",
                 "--temperature", "0.5", "--seed", "3", "--cache"]) == 0
    assert capsys.readouterr().out == sampled  # the KV cache draws the same text
    assert main(["generate", "--run", str(out), "--prompt", "the c", "--tokens", "20",
                 "--temperature", "0"]) == 0
    assert capsys.readouterr().out.startswith("the cat sat on")  # (4 short epochs)
