"""jaxprop: backpropagation written by hand for feedforward neural networks, compiled with JAX.

Networks are pure pytrees of parameters with pure functions around them; the backward pass is
the chain rule, layer by layer, and is proven equal to ``jax.grad`` and to finite differences.

Layout: ``jaxprop.core`` (layers, losses, networks, backprop), ``jaxprop.train`` (the training
step, loops and ``fit``), ``jaxprop.scale`` (populations, per-example gradients, data parallel,
the ``custom_vjp`` bridge), ``jaxprop.tools`` (gradient checks, worked examples),
``jaxprop.runs`` (run folders), ``jaxprop.saving`` (``jp.save``/``jp.load``), ``jaxprop.data``,
``jaxprop.bench`` and ``jaxprop.cli``.
"""

import gc as _gc

# Importing jaxprop (with JAX and optax) makes some 200,000 objects that live as long as the
# process; the garbage collector's full passes during the imports would walk all of them again
# and again (half of this package's import time, a fifth of JAX's). It is paused while they load
# and runs as before afterwards.
_gc_was_enabled = _gc.isenabled()
_gc.disable()
try:
    from jaxprop.core.backprop import loss_and_grad_fn, loss_grad_state_fn, value_and_grad
    from jaxprop.core.checks import BackwardError, check_output_fits_loss, validate_data
    from jaxprop.core.conv import AvgPool2D, Conv2D, MaxPool2D
    from jaxprop.core.layers import (
        ACTIVATIONS,
        INITIALIZERS,
        Dense,
        Dropout,
        Flatten,
        Gelu,
        Identity,
        Layer,
        LeakyRelu,
        Relu,
        Reshape,
        Sigmoid,
        Softmax,
        Softplus,
        Tanh,
        activation,
        elementwise,
        get_initializer,
    )
    from jaxprop.core.losses import LOSSES, Loss, get_loss, make_loss
    from jaxprop.core.network import Model, Residual, mlp, serial
    from jaxprop.core.norm import BatchNorm, LayerNorm
    from jaxprop.core.spec import parse_model
    from jaxprop.saving import load, save
    from jaxprop.scale.bridge import as_jax_function
    from jaxprop.scale.parallel import (
        data_mesh,
        data_parallel_grad_fn,
        data_parallel_inputs,
        make_data_parallel_step,
        shard_batch,
    )
    from jaxprop.scale.per_example import clip_per_example, per_example_grads, per_example_norms
    from jaxprop.scale.population import PopulationResult, fit_population, init_population
    from jaxprop.tools.gradcheck import (
        GradCheckReport,
        LayerCheck,
        LayerReport,
        LeafCheck,
        check_gradients,
        check_layer,
        check_loss,
    )
    from jaxprop.train import (
        OPTIMIZERS,
        PRECISIONS,
        Precision,
        get_precision,
        History,
        TrainingDiverged,
        TrainingInterrupted,
        TrainState,
        enable_compilation_cache,
        fit,
        fit_state,
        init_state,
        make_epoch_fn,
        make_eval_fn,
        make_train_epochs,
        make_train_step,
        masked_loss_and_grad_fn,
    )
finally:
    if _gc_was_enabled:
        _gc.enable()

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS", "INITIALIZERS", "LOSSES", "OPTIMIZERS", "Dense", "Gelu", "Identity", "Layer",
    "LeakyRelu", "Loss", "Model", "Relu", "Sigmoid", "Softmax", "Softplus", "Tanh", "activation",
    "elementwise", "get_initializer", "get_loss", "load", "make_loss", "mlp", "parse_model",
    "save", "serial",
    "BackwardError", "check_output_fits_loss", "loss_and_grad_fn", "loss_grad_state_fn",
    "validate_data",
    "value_and_grad",
    "GradCheckReport", "LeafCheck", "check_gradients",
    "LayerCheck", "LayerReport", "check_layer", "check_loss",
    "PopulationResult", "as_jax_function", "clip_per_example", "data_mesh",
    "data_parallel_grad_fn", "data_parallel_inputs", "fit_population", "init_population",
    "make_data_parallel_step", "per_example_grads", "per_example_norms", "shard_batch",
    "History", "TrainState", "TrainingDiverged", "TrainingInterrupted",
    "enable_compilation_cache", "fit", "fit_state",
    "init_state",
    "make_epoch_fn", "make_eval_fn", "make_train_epochs", "make_train_step",
    "masked_loss_and_grad_fn",
    "PRECISIONS", "Precision", "get_precision",
    "AvgPool2D", "BatchNorm", "Conv2D", "Dropout", "Flatten", "LayerNorm", "MaxPool2D",
    "Reshape", "Residual",
]
