"""jaxprop: backpropagation written by hand for feedforward neural networks, compiled with JAX.

Networks are pure pytrees of parameters with pure functions around them; the backward pass is
the chain rule, layer by layer, and is proven equal to ``jax.grad`` and to finite differences.

Layout: ``jaxprop.core`` (layers, losses, networks, backprop), ``jaxprop.train`` (the training
step, loops and ``fit``), ``jaxprop.scale`` (populations, per-example gradients, data parallel,
the ``as_jax_function`` bridge), ``jaxprop.tools`` (gradient checks, worked examples),
``jaxprop.runs`` (run folders), ``jaxprop.logs`` (history.csv, TensorBoard), ``jaxprop.saving``
(``jp.save``/``jp.load``), ``jaxprop.evaluation`` (``jp.evaluate``: metrics and plots of a
trained model), ``jaxprop.data``, ``jaxprop.bench`` and ``jaxprop.cli``.
"""

import importlib

# Each public name and the module it lives in. They load on first use (PEP 562): importing
# jaxprop imports neither JAX nor anything else, and changes nothing process-wide; `jaxprop`
# the command pauses the garbage collector while it loads them (jaxprop.cli.main).
_EXPORTS = {
    "jaxprop.core.backprop": ("hvp", "loss_and_grad_fn", "loss_grad_state_fn", "value_and_grad"),
    "jaxprop.core.checks": ("BackwardError", "check_output_fits_loss", "validate_data"),
    "jaxprop.core.conv": ("AvgPool2D", "Conv2D", "MaxPool2D"),
    "jaxprop.core.layers": (
        "ACTIVATIONS", "INITIALIZERS", "Dense", "Dropout", "Flatten", "Gelu", "Identity", "Layer",
        "LeakyRelu", "Relu", "Reshape", "Sigmoid", "Softmax", "Softplus", "Tanh", "activation",
        "elementwise", "get_initializer",
    ),
    "jaxprop.core.losses": ("LOSSES", "Loss", "get_loss", "make_loss"),
    "jaxprop.core.network": ("Model", "Repeat", "Residual", "mlp", "serial"),
    "jaxprop.core.norm": ("BatchNorm", "LayerNorm"),
    "jaxprop.core.sequence": ("CausalSelfAttention", "Embedding", "PositionalEmbedding", "gpt"),
    "jaxprop.core.spec": ("parse_model", "register_layer"),
    "jaxprop.logs": ("TensorBoardLogger", "write_history_csv"),
    "jaxprop.evaluation": ("Evaluation", "evaluate"),
    "jaxprop.saving": ("load", "save"),
    "jaxprop.scale.bridge": ("as_jax_function",),
    "jaxprop.scale.parallel": (
        "data_mesh", "data_parallel_grad_fn", "data_parallel_inputs", "make_data_parallel_step",
        "shard_batch",
    ),
    "jaxprop.scale.per_example": ("clip_per_example", "per_example_grads", "per_example_norms"),
    "jaxprop.scale.population": ("PopulationResult", "fit_population", "init_population"),
    "jaxprop.tools.explain": ("explain",),
    "jaxprop.tools.generate": ("generate",),
    "jaxprop.tools.check_function": ("check_jvp", "check_vjp"),
    "jaxprop.tools.gradcheck": (
        "GradCheckReport", "LayerCheck", "LayerReport", "LeafCheck", "check_gradients",
        "check_layer", "check_loss",
    ),
    "jaxprop.tools.hvpcheck": ("HvpReport", "check_hvp"),
    "jaxprop.train": (
        "OPTIMIZERS", "PRECISIONS", "Precision", "get_precision", "History", "TrainingDiverged",
        "TrainingInterrupted", "TrainState", "enable_compilation_cache", "fit", "fit_state",
        "init_state", "make_epoch_fn", "make_eval_fn", "make_train_epochs", "make_train_step",
        "masked_loss_and_grad_fn", "EarlyStopping", "SCHEDULES", "make_optimizer",
        "make_schedule",
    ),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
# the subpackages and modules ``jaxprop.NAME`` reaches without an import of its own
_SUBMODULES = ("bench", "checkpoint", "cli", "core", "data", "device", "evaluation", "logs",
               "plots", "predict", "runs", "saving", "scale", "tools", "train")


def __getattr__(name: str):
    """``jaxprop.NAME``: the public name (its module imported on first use), or a submodule."""
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value  # from now on a plain attribute
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE) | set(_SUBMODULES))


__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS", "INITIALIZERS", "LOSSES", "OPTIMIZERS", "Dense", "Gelu", "Identity", "Layer",
    "LeakyRelu", "Loss", "Model", "Relu", "Sigmoid", "Softmax", "Softplus", "Tanh", "activation",
    "elementwise", "get_initializer", "get_loss", "load", "make_loss", "mlp", "parse_model",
    "register_layer", "save", "serial",
    "BackwardError", "check_output_fits_loss", "loss_and_grad_fn", "loss_grad_state_fn",
    "validate_data",
    "value_and_grad", "hvp", "HvpReport", "check_hvp",
    "GradCheckReport", "LeafCheck", "check_gradients",
    "LayerCheck", "LayerReport", "check_layer", "check_loss",
    "check_jvp", "check_vjp", "explain",
    "PopulationResult", "as_jax_function", "clip_per_example", "data_mesh",
    "data_parallel_grad_fn", "data_parallel_inputs", "fit_population", "init_population",
    "make_data_parallel_step", "per_example_grads", "per_example_norms", "shard_batch",
    "History", "TrainState", "TrainingDiverged", "TrainingInterrupted",
    "enable_compilation_cache", "fit", "fit_state", "EarlyStopping", "SCHEDULES",
    "make_optimizer", "make_schedule",
    "init_state",
    "make_epoch_fn", "make_eval_fn", "make_train_epochs", "make_train_step",
    "masked_loss_and_grad_fn",
    "PRECISIONS", "Precision", "get_precision",
    "AvgPool2D", "BatchNorm", "Conv2D", "Dropout", "Flatten", "LayerNorm", "MaxPool2D",
    "Reshape", "Residual", "Repeat",
    "CausalSelfAttention", "Embedding", "PositionalEmbedding", "gpt",
    "TensorBoardLogger", "write_history_csv",
    "Evaluation", "evaluate",
    "generate",
]
