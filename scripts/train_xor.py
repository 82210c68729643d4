"""The classic XOR network: 2-4-1 sigmoid, standard-normal weights, 1/2 sum of squared errors,
plain gradient descent with learning rate 0.1, 10,000 full-batch epochs (all compiled).

    python scripts/train_xor.py [--seed 0]
"""

import argparse

import jax
import numpy as np
import optax

import jaxprop as jp
import jaxprop.data

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--seed", type=int, default=0)
seed = parser.parse_args().seed

x, t = jp.data.xor()  # the four patterns and their targets, float32

model = jp.mlp([2, 4, 1], activation="sigmoid", output_activation="sigmoid", init="normal")


params, history = jp.fit(model, "sse_half", optax.sgd(0.1), (x, t), epochs=10_000,
                         key=jax.random.key(seed), log_every=10_000)

# history.losses[e] is the loss at the start of epoch e (before that epoch's update)
for epoch in range(0, 10_000, 4000):
    print(f"epoch {epoch:>6}: loss {history.losses[epoch]:.6f}")
print(f"epoch {10_000:>6}: loss {history.records[-1]['train_loss']:.6f}")
print("\ninput  target  output")
for xi, ti, yi in zip(x, t, np.asarray(model.apply(params, x))):
    print(f"{xi}  {ti[0]:.0f}       {yi[0]:.4f}")
