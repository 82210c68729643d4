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

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS", "LOSSES", "Dense", "Gelu", "Identity", "Layer", "LeakyRelu", "Loss", "Model",
    "Relu", "Sigmoid", "Softmax", "Softplus", "Tanh", "activation", "get_initializer",
    "GradCheckReport", "LeafCheck", "check_gradients",
    "get_loss", "loss_and_grad_fn", "mlp", "serial", "validate_data", "value_and_grad",
]
