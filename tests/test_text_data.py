"""Sequence datasets: character-level text (a file or the default corpus) and the reverse and
sort digit tasks: shapes, windows, the split by position, the vocabulary, refusals."""

import numpy as np
import pytest

from jaxprop import data
from jaxprop.data.text import (
    answer_accuracy,
    decode,
    default_corpus,
    encode,
    unigram_entropy,
    vocabulary,
    windows,
)


def test_windows_are_inputs_and_next_tokens_without_overlap():
    ids = np.arange(11, dtype=np.int32)
    x, y = windows(ids, 3)
    assert x.dtype == y.dtype == np.int32
    np.testing.assert_array_equal(x, [[0, 1, 2], [3, 4, 5], [6, 7, 8]])
    np.testing.assert_array_equal(y, x + 1)


def test_a_text_file_becomes_windows_split_by_position(tmp_path):
    text = "abcdefghij" * 10  # 100 characters
    (tmp_path / "t.txt").write_text(text, encoding="utf-8")
    ds = data.load("text", path=tmp_path / "t.txt", context=4, test_fraction=0.2)
    assert ds.task == "sequence" and ds.class_names == tuple("abcdefghij")
    assert ds.num_classes == 10 and ds.scaling is None
    assert ds.x_train.shape == (19, 4) and ds.x_test.shape == (4, 4)  # 80 and 20 characters
    assert decode(ds.x_train[0], ds.class_names) == "abcd"
    assert decode(ds.y_train[0], ds.class_names) == "bcde"
    assert decode(ds.x_test[0], ds.class_names) == text[80:84]  # the last fifth, in order


def test_the_default_corpus_ships_with_python():
    text = default_corpus()
    assert 100_000 <= len(text) <= 200_000 and "assert" in text
    ds = data.load("text", context=32)
    assert ds.x_train.shape[1] == 32 and ds.x_train.dtype == np.int32
    assert 0 < unigram_entropy(ds.y_train, ds.num_classes) < np.log(ds.num_classes)


@pytest.mark.parametrize("content, message", [
    (b"", "is empty"),
    (b"\xff\xfe\x00\x01binary", "not UTF-8 text"),
    (b"abc\x00def" * 20, "NUL characters"),
    (b"abcdef", "too short: 6 characters"),
])
def test_bad_text_files_get_one_line(tmp_path, content, message):
    (tmp_path / "t.txt").write_bytes(content)
    with pytest.raises(ValueError, match=message) as e:
        data.load("text", path=tmp_path / "t.txt")
    assert "\n" not in str(e.value)
    with pytest.raises(FileNotFoundError, match="no such file"):
        data.load("text", path=tmp_path / "missing.txt")


def test_encode_names_the_characters_the_vocabulary_lacks():
    vocab = vocabulary("hello world")
    assert vocab == " dehlorw"
    assert decode(encode("hello", vocab), vocab) == "hello"
    with pytest.raises(ValueError, match=r"not in the vocabulary: '!z'"):
        encode("hez!", vocab)


@pytest.mark.parametrize("name", ["reverse", "sort"])
def test_digit_tasks_echo_the_input_then_answer(name):
    ds = data.load(name, n_samples=50, context=8, seed=3)
    assert ds.class_names == tuple("0123456789=") and ds.task == "sequence"
    assert ds.x_train.shape == (40, 8) and ds.x_test.shape == (10, 8)
    for x, y in zip(ds.x_train, ds.y_train):
        question, answer = decode(x, ds.class_names)[:4], decode(y, ds.class_names)[4:]
        assert decode(x, ds.class_names)[4] == "="
        assert answer == (question[::-1] if name == "reverse" else "".join(sorted(question)))
        assert decode(y, ds.class_names)[:4] == question  # the echo
        assert decode(x, ds.class_names)[5:] == answer[:-1]  # teacher forcing
    again = data.load(name, n_samples=50, context=8, seed=3)
    np.testing.assert_array_equal(again.x_train, ds.x_train)
    with pytest.raises(ValueError, match="context must be even"):
        data.load(name, context=7)
    with pytest.raises(ValueError, match="applies only to dataset"):
        data.load("moons", context=8)


def test_answer_accuracy_scores_the_second_half_only():
    y = np.array([[1, 2, 3, 4]])
    logits = np.eye(5)[[[0, 0, 3, 0]]]  # wrong on the first half, half right on the answer
    assert answer_accuracy(logits, y) == 0.5
