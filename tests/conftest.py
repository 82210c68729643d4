"""Shared test setup: float64 available everywhere (tests pick the dtype they need)."""

import jax

jax.config.update("jax_enable_x64", True)
