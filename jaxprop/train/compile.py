"""XLA compile options for training programs, chosen from the size of the work.

Tiny networks spend more time compiling than training, and hand their matmuls to a thread pool
that costs more than the matmul itself; large ones need XLA's full optimisation and threads.
"""

from __future__ import annotations

import collections
import math
import os
from typing import Callable

import jax
import jax.extend
import numpy as np

from jaxprop.core.cache import remember
from jaxprop.core.layers import SMALL_MATMUL_ENTRIES, SMALL_MATMUL_TERMS

# XLA CPU options that compile about 3x faster (no LLVM optimisation, the classic fusion
# emitters, and the module compiled in one piece: splitting a small program's LLVM module
# over threads costs more than it saves, 40 ms of the 170 ms that XOR's initialisation
# program takes to compile) for code that runs about 1.2x (XOR) to 4x (digits) slower per
# step.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False,
                "xla_cpu_parallel_codegen_split_count": 1}
# Two thresholds of fast compilation, both 1e8 FLOPs but of different quantities, so two names:
# - fit: below this many FLOPs per *epoch*, compiling dominates a typical run (XOR's 10,000
#   epochs, digits' 15) and optimising the code does not pay for itself. Per epoch, not per
#   run, so that a resumed run compiles exactly like the uninterrupted one (the same bits).
AUTO_FAST_COMPILE_EPOCH_FLOPS = 1e8
# - populations: below this many FLOPs of the whole *run* (every epoch of every member). A
#   population is trained in one call that is never resumed, so its real length can decide; it
#   runs long, and optimised code pays for itself sooner (1000 XOR networks: about 2x faster
#   code for 0.1 s more compilation).
AUTO_FAST_COMPILE_RUN_FLOPS = 1e8
# Below this many FLOPs per step, handing matmuls to Eigen's thread pool costs more than it
# saves (XOR 2-4-1: 2x faster steps on the calling thread).
AUTO_SINGLE_THREAD_STEP_FLOPS = 1e5
# Epochs per iteration of the compiled loop for a tiny step that still calls matmuls (a 2-12-12-1
# network on XOR: 10-20% faster). Networks whose every product is a few multiply-adds (Dense's
# ``matmul``) keep 1: XLA compiles their whole loop into one function, which unrolling undoes.
AUTO_UNROLL = 4


def auto_compiler_options(n_params: int, n_examples: int,
                          batch_size: int | None, *,
                          forward_flops: float | None = None) -> dict | None:
    """The XLA options ``fit(compiler_options="auto")`` picks (CPU only; ``None`` elsewhere).

    ``FAST_COMPILE`` when an epoch's FLOPs (:func:`step_flops` per example) are under
    ``AUTO_FAST_COMPILE_EPOCH_FLOPS``; single-threaded matmuls when a step's are under
    ``AUTO_SINGLE_THREAD_STEP_FLOPS``. The choice never depends on the number of epochs, so
    a resumed run is compiled exactly like the uninterrupted one (and gives the same bits).

    Args:
      n_params: the model's number of parameters.
      n_examples: training examples (an epoch's).
      batch_size: examples per step; ``None`` for full batch.
      forward_flops: the forward pass's FLOPs for one example (:func:`forward_flops`), or
        ``None`` when unknown.

    Returns:
      the options (a new dict), or ``None`` for XLA's defaults.
    """
    if jax.default_backend() != "cpu":
        return None
    batch = n_examples if batch_size is None else min(batch_size, n_examples)
    per_example = step_flops(n_params, forward_flops)
    options = {}
    if per_example * n_examples < AUTO_FAST_COMPILE_EPOCH_FLOPS:
        options.update(FAST_COMPILE)
    if per_example * batch < AUTO_SINGLE_THREAD_STEP_FLOPS:
        options["xla_cpu_multi_thread_eigen"] = False
    return options or None


def compile_lowered(lowered, options: dict | None):
    """``lowered.compile(options)``; an option XLA does not know is a ``ValueError`` naming it
    (not the runtime's INVALID_ARGUMENT)."""
    try:
        return lowered.compile(options)
    except jax.errors.JaxRuntimeError as e:
        text = str(e)
        if "compile option" not in text:
            raise
        raise ValueError(f"compiler_options: {text.split(': ', 1)[-1]} (the options are XLA's "
                         "flags, e.g. {'xla_cpu_enable_fast_math': False}; given: "
                         f"{sorted(options or {})})") from None


class CompiledPrograms:
    """Compiled programs kept across calls, least recently used dropped beyond ``maxsize``.

    Keyed by what the caller's program was built and compiled for, plus JAX's settings that
    change the compiled code without changing the arguments (the default matmul precision,
    x64): a call under ``jax.default_matmul_precision("highest")`` never reuses a program
    compiled outside it. A key that cannot be hashed (an optimizer holding arrays) compiles
    for that call only.
    """

    def __init__(self, maxsize: int):
        self.maxsize = maxsize
        self._programs: collections.OrderedDict = collections.OrderedDict()

    def get(self, key, build: Callable):
        """The program for ``key``, from ``build()`` the first time."""
        key = (key, jax.config.jax_default_matmul_precision, jax.config.jax_enable_x64)
        try:
            hash(key)
        except TypeError:
            return build()
        if key in self._programs:
            self._programs.move_to_end(key)
            return self._programs[key]
        program = self._programs[key] = build()
        while len(self._programs) > self.maxsize:
            self._programs.popitem(last=False)
        return program

    def __len__(self) -> int:
        return len(self._programs)


def step_flops(n_params: int, forward_flops: float | None = None) -> float:
    """A training step's FLOPs per example, the one estimate every automatic choice uses.

    3 times the forward pass's FLOPs counted on the traced program (:func:`forward_flops`: the
    forward pass, the backward pass to the inputs, the backward pass to the weights), exact for
    matmuls and convolutions; 6 per parameter (what that comes to for a Dense network) only
    when the count is unknown (``None``: tracing failed, or a caller that passed parameters
    alone).
    """
    return 3.0 * forward_flops if forward_flops else 6.0 * n_params


def forward_flops(model, params, model_state, x_one) -> float | None:
    """An estimate of the FLOPs of ``model``'s forward pass (evaluation mode) on ``x_one``.

    Counted on the traced program (:func:`jaxpr_flops`), never lowered or compiled (lowering it
    for XLA's own count cost 15 ms, a tenth of ``jaxprop train``'s XOR run); remembered per
    model and argument types (a second fit or population of the same model traces nothing).

    Args:
      model: the model.
      params: its params (arrays or anything with a shape and dtype).
      model_state: its state.
      x_one: one example with a batch axis of 1, ``(1, *in_shape)``.

    Returns:
      the FLOPs, or ``None`` if unknown (tracing failed).
    """
    leaves, treedef = jax.tree.flatten((params, model_state, x_one))
    try:
        avals = tuple(map(jax.typeof, leaves))
    except TypeError:  # a leaf that is no array (a string in a custom state): not traceable
        return None
    return _traced_forward_flops(model, treedef, avals)


@remember(maxsize=64)
def _traced_forward_flops(model, treedef, avals: tuple) -> float | None:
    """:func:`forward_flops` for arguments of these types (``jax.typeof`` of each leaf)."""
    structs = [jax.ShapeDtypeStruct(a.shape, a.dtype, weak_type=a.weak_type) for a in avals]
    params, model_state, x_one = jax.tree.unflatten(treedef, structs)
    try:
        traced = jax.make_jaxpr(lambda p, s, x: model.forward(p, s, x, train=False)[0])(
            params, model_state, x_one)
        flops = jaxpr_flops(traced.jaxpr)
    except Exception:  # noqa: BLE001 - an estimate only: step_flops falls back to parameters
        return None
    return float(flops) if flops else None


def jaxpr_flops(jaxpr) -> float:
    """FLOPs of a jaxpr: exact for products (``dot_general``: 2 per multiply-add;
    ``conv_general_dilated``: 2 per kernel tap and input feature of each output), one per
    output element of elementwise operations, one per input element of reductions, window size
    per output of windowed reductions; inner jaxprs counted where they run (``scan``: times its
    length; ``cond``: its dearest branch). Within 1-2x of XLA's own count for the built-in
    layers, which is all the compile options need."""
    total = 0.0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        inner = [j.jaxpr if hasattr(j, "jaxpr") else j for v in eqn.params.values()
                 for j in (v if isinstance(v, (tuple, list)) else (v,))
                 if isinstance(j, (jax.extend.core.ClosedJaxpr, jax.extend.core.Jaxpr))]
        out = sum(_elements(v) for v in eqn.outvars)
        if inner:
            counts = [jaxpr_flops(j) for j in inner]
            total += (max(counts) if name == "cond"
                      else eqn.params.get("length", 1) * sum(counts) if name == "scan"
                      else sum(counts))
        elif name == "dot_general":
            (contracting, _), _ = eqn.params["dimension_numbers"]
            shape = eqn.invars[0].aval.shape
            total += 2.0 * out * math.prod(shape[i] for i in contracting)
        elif name == "conv_general_dilated":
            kernel = eqn.invars[1].aval.shape
            features = kernel[eqn.params["dimension_numbers"].rhs_spec[0]]
            total += 2.0 * out * math.prod(kernel) / features
        elif "window_dimensions" in eqn.params:
            total += out * math.prod(eqn.params["window_dimensions"])
        elif name.startswith(("reduce_", "argm")):
            total += sum(_elements(v) for v in eqn.invars)
        else:
            total += out
    return total


def _elements(var) -> int:
    return math.prod(getattr(getattr(var, "aval", None), "shape", ()))


def auto_unroll(params, n_examples: int, batch_size: int | None, *,
                forward_flops: float | None = None) -> int:
    """The ``unroll`` (epochs per compiled loop iteration) ``fit(unroll="auto")`` picks.

    ``AUTO_UNROLL`` when a step's FLOPs (:func:`step_flops` per example, from
    ``forward_flops`` when given) are under ``AUTO_SINGLE_THREAD_STEP_FLOPS`` (the loop's own
    overhead then matters) and some weight matrix is too big for Dense's multiply-add products;
    else 1. Like :func:`auto_compiler_options` it never depends on the number of epochs, so a
    resumed run compiles like the uninterrupted one.
    """
    leaves = [np.shape(leaf) for leaf in jax.tree.leaves(params)]
    n_params = sum(int(np.prod(s)) for s in leaves)
    batch = n_examples if batch_size is None else min(batch_size, n_examples)
    calls_matmul = any(len(s) >= 2 and (int(np.prod(s)) > SMALL_MATMUL_ENTRIES
                                        or s[0] > SMALL_MATMUL_TERMS) for s in leaves)
    tiny_step = step_flops(n_params, forward_flops) * batch < AUTO_SINGLE_THREAD_STEP_FLOPS
    if calls_matmul and tiny_step:
        return AUTO_UNROLL
    return 1


CACHE_ENV = "JAXPROP_COMPILATION_CACHE"


def default_cache_dir() -> str:
    """``$XDG_CACHE_HOME/jaxprop/xla`` (``~/.cache/jaxprop/xla``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "jaxprop", "xla")


def enable_compilation_cache(path: str | None = None) -> str | None:
    """Keep compiled programs on disk (JAX's persistent compilation cache), so that a new
    process loads what an earlier one compiled instead of compiling it again (XOR's first
    ``fit``: ~2x faster). ``jaxprop train`` calls it; call it yourself before your first
    computation.

    ``path``: the folder; default ``$JAXPROP_COMPILATION_CACHE``, else
    :func:`default_cache_dir`. ``"off"``, ``"0"`` or ``""`` (argument or variable) disables.
    A cache folder you configured in JAX yourself is left as it is. Returns the folder in use,
    or ``None``.
    """
    if path is None:
        path = os.environ.get(CACHE_ENV, default_cache_dir())
    if str(path).strip().lower() in ("", "0", "off", "none", "false"):
        return None
    if jax.config.jax_compilation_cache_dir:
        return jax.config.jax_compilation_cache_dir
    from jax.experimental.compilation_cache import compilation_cache

    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    compilation_cache.reset_cache()  # a program compiled before this must not disable it
    return str(path)
