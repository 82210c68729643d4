"""Scale-out on the training step: populations, per-example gradients, data parallel, and the
``custom_vjp`` bridge to the rest of JAX (see docs/scale.md)."""
