"""jaxprop: backpropagation written by hand for feedforward networks, compiled with JAX.

Networks are pure pytrees of parameters with pure functions around them; the backward pass is
the chain rule, layer by layer, and is proven equal to ``jax.grad`` and to finite differences.
"""

from jaxprop.backprop import loss_and_grad_fn, validate_data, value_and_grad
from jaxprop.gradcheck import GradCheckReport, LeafCheck, check_gradients
from jaxprop.layers import (
    ACTIVATIONS,
    Dense,
    Gelu,
    Identity,
    Layer,
    LeakyRelu,
    Relu,
    Sigmoid,
    Softmax,
    Softplus,
    Tanh,
    activation,
    get_initializer,
)
from jaxprop.losses import LOSSES, Loss, get_loss
from jaxprop.network import Model, mlp, serial
from jaxprop.bridge import as_jax_function
from jaxprop.parallel import data_mesh, data_parallel_grad_fn, make_data_parallel_step, shard_batch
from jaxprop.per_example import clip_per_example, per_example_grads, per_example_norms
from jaxprop.population import PopulationResult, fit_population, init_population
from jaxprop.train import (
    History,
    TrainingDiverged,
    TrainState,
    fit,
    fit_state,
    init_state,
    make_epoch_fn,
    make_eval_fn,
    make_train_epochs,
    make_train_step,
    masked_loss_and_grad_fn,
)

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS", "LOSSES", "Dense", "Gelu", "Identity", "Layer", "LeakyRelu", "Loss", "Model",
    "Relu", "Sigmoid", "Softmax", "Softplus", "Tanh", "activation", "get_initializer",
    "GradCheckReport", "LeafCheck", "check_gradients",
    "PopulationResult", "as_jax_function", "clip_per_example", "data_mesh",
    "data_parallel_grad_fn", "fit_population", "init_population", "make_data_parallel_step",
    "per_example_grads", "per_example_norms", "shard_batch",
    "get_loss", "loss_and_grad_fn", "mlp", "serial", "validate_data", "value_and_grad",
    "History", "TrainState", "TrainingDiverged", "fit", "fit_state", "init_state",
    "make_epoch_fn", "make_eval_fn", "make_train_epochs", "make_train_step",
    "masked_loss_and_grad_fn",
]
