"""Sequence datasets of tokens: character-level text and two synthetic digit tasks.

Every one is a :class:`~jaxprop.data.Dataset` with ``task == "sequence"``: ``x_*: (n, T)``
int32 token ids, ``y_*: (n, T)`` int32 targets (the next token), ``num_classes`` the size of
the vocabulary and ``class_names`` the vocabulary itself (token ``i`` is the character
``class_names[i]``), so a run folder can decode what a model generates.

- ``text``: a UTF-8 file (or :func:`default_corpus`) read character by character; the
  vocabulary is the sorted set of its characters. The text is split by position (the last
  ``test_fraction`` of it is the test set) and each part cut into non-overlapping windows of
  ``context`` tokens: ``x = ids[i:i+T]``, ``y = ids[i+1:i+T+1]``, ``i = 0, T, 2T, ...``.
- ``reverse`` and ``sort``: ``n_samples`` random strings of ``context // 2`` digits, each
  followed by ``=`` and its answer (the digits reversed, or sorted): ``"3141=1413"``. The
  vocabulary is ``"0123456789="``. A causal model cannot predict the random input digits, so
  on the input half the target is the input token itself (an echo, learnt at once) and on the
  answer half the next token: ``x = "3141=141"``, ``y = "31411413"``. Every position is then
  learnable, token accuracy can reach 100%, and generating after a prompt ``"3141="`` answers
  it. :func:`answer_accuracy` scores the answer half alone.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from jaxprop.core.validate import check_int
from jaxprop.data.dataset import Dataset
from jaxprop.data.preprocessing import check_seed

SEQUENCE = "sequence"  # the Dataset.task of these datasets
DEFAULT_CONTEXT = {"text": 64, "reverse": 16, "sort": 16}
DEFAULT_SEQUENCES = 10_000  # reverse/sort: strings generated
# the default corpus: this many characters of the Python documentation's topics
DEFAULT_CORPUS_CHARS = 200_000
DIGITS = "0123456789"
SEPARATOR = "="


def default_corpus(max_chars: int = DEFAULT_CORPUS_CHARS) -> str:
    """The text ``jaxprop train --dataset text`` reads when no file is given.

    Python's own help topics (``pydoc_data.topics``, what ``help("if")`` prints: the language
    reference in plain text), topics in sorted order, the first ``max_chars`` characters. Ships
    with CPython (3.11: 465,000 characters, 103 distinct); no download.
    """
    try:
        from pydoc_data.topics import topics
    except ImportError:  # a Python without its documentation topics
        raise ValueError("this Python has no pydoc_data.topics (the default corpus); give a "
                         "UTF-8 text file with --text FILE") from None
    return "".join(topics[name] for name in sorted(topics))[:max_chars]


def read_text(path) -> str:
    """The UTF-8 text of the file at ``path``; ``ValueError`` in one line for an empty file,
    one that is not UTF-8 text (binary) or holds NUL characters; ``FileNotFoundError``."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"--text {p}: no such file")
    raw = p.read_bytes()
    if not raw.strip():
        raise ValueError(f"--text {p} is empty")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"--text {p} is not UTF-8 text (undecodable byte at offset "
                         f"{e.start}); give a plain text file") from None
    if "\x00" in text:
        raise ValueError(f"--text {p} holds NUL characters: a binary file, not text")
    return text


def vocabulary(text: str) -> str:
    """The sorted set of the characters of ``text`` (token ``i`` is character ``i``)."""
    return "".join(sorted(set(text)))


def encode(text: str, vocab: str) -> np.ndarray:
    """``(len(text),)`` int32 token ids of ``text`` in ``vocab``; ``ValueError`` listing the
    characters ``vocab`` lacks."""
    index = {c: i for i, c in enumerate(vocab)}
    missing = sorted(set(text) - set(index))
    if missing:
        raise ValueError(f"characters not in the vocabulary: {''.join(missing)!r} (the model "
                         f"knows {len(vocab)}: {vocab!r})")
    return np.fromiter((index[c] for c in text), np.int32, len(text))


def decode(ids, vocab: str) -> str:
    """The text of token ids ``ids`` (any shape, read in order) in ``vocab``."""
    return "".join(vocab[int(i)] for i in np.ravel(ids))


def windows(ids: np.ndarray, context: int) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping windows of ``context`` tokens and their next tokens.

    ``ids: (L,)`` -> ``x, y: (n, context)`` int32 with ``n = (L - 1) // context``:
    ``x[k] = ids[kT : kT + T]``, ``y[k] = ids[kT + 1 : kT + T + 1]``.
    """
    n = (len(ids) - 1) // context
    starts = np.arange(n)[:, None] * context + np.arange(context)[None, :]
    return ids[starts].astype(np.int32), ids[starts + 1].astype(np.int32)


def text_dataset(text: str | None = None, *, context: int = DEFAULT_CONTEXT["text"],
                 test_fraction: float = 0.2, source: str = "the text") -> Dataset:
    """A character-level :class:`Dataset` of ``text`` (``None``: :func:`default_corpus`).

    The last ``test_fraction`` of the characters are the test set; each part is cut into
    :func:`windows` of ``context`` tokens. ``ValueError`` when either part is too short for a
    window (naming the length needed).
    """
    context = check_int("context", context, minimum=1)
    if text is None:
        text, source = default_corpus(), "the default corpus"
    n_test = math.ceil(test_fraction * len(text))
    need = math.ceil((context + 1) / min(test_fraction, 1 - test_fraction))
    if n_test < context + 1 or len(text) - n_test < context + 1:
        raise ValueError(f"{source} is too short: {len(text):,} characters; a context of "
                         f"{context} with test_fraction {test_fraction} needs at least {need:,}")
    vocab = vocabulary(text)
    ids = encode(text, vocab)
    x_train, y_train = windows(ids[:len(text) - n_test], context)
    x_test, y_test = windows(ids[len(text) - n_test:], context)
    return Dataset("text", x_train, y_train, x_test, y_test, len(vocab), None, tuple(vocab),
                   SEQUENCE)


def digit_task(name: str, n: int = DEFAULT_SEQUENCES, *, context: int = DEFAULT_CONTEXT["reverse"],
               test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """The ``reverse`` or ``sort`` task as a :class:`Dataset` (module docstring).

    ``n`` random strings of ``context // 2`` digits (``context`` even, at least 4) from
    ``seed``; the last ``test_fraction`` of them are the test set.
    """
    if name not in ("reverse", "sort"):
        raise ValueError(f"digit_task: name must be 'reverse' or 'sort', got {name!r}")
    n = check_int("n_samples", n, minimum=2)
    context = check_int("context", context, minimum=4)
    if context % 2:
        raise ValueError(f"context must be even for {name} (digits, '=', the answer); got "
                         f"{context}")
    length = context // 2
    rng = np.random.default_rng(check_seed(seed))
    digits = rng.integers(0, 10, (n, length), dtype=np.int32)
    answer = digits[:, ::-1] if name == "reverse" else np.sort(digits, axis=1)
    sep = np.full((n, 1), len(DIGITS), np.int32)  # "=" follows the digits in the vocabulary
    x = np.concatenate([digits, sep, answer[:, :-1]], axis=1)
    y = np.concatenate([digits, answer], axis=1)  # echo, then the next token
    n_test = max(1, math.ceil(test_fraction * n))
    if n_test >= n:
        raise ValueError(f"test_fraction={test_fraction} of {n} strings leaves none to train on")
    return Dataset(name, x[:-n_test], y[:-n_test], x[-n_test:], y[-n_test:], len(DIGITS) + 1,
                   None, tuple(DIGITS + SEPARATOR), SEQUENCE)


def answer_accuracy(logits, y) -> float:
    """The share of answer tokens (the second half of each row) that ``logits: (n, T, V)``
    predict right against ``y: (n, T)`` (for ``reverse`` and ``sort``)."""
    half = np.asarray(y).shape[1] // 2
    predicted = np.argmax(np.asarray(logits)[:, half:], axis=-1)
    return float(np.mean(predicted == np.asarray(y)[:, half:]))


def unigram_entropy(ids, num_tokens: int) -> float:
    """The entropy (nats) of the token frequencies in ``ids``: the cross-entropy of the best
    model that ignores context, the baseline a sequence model must beat."""
    counts = np.bincount(np.ravel(ids), minlength=num_tokens).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-np.sum(p * np.log(p)))
