"""Two interleaved spirals: a 2-64-64-1 tanh MLP, logits + bce_with_logits, Adam, full batch.

    python scripts/train_spirals.py [--epochs 1000] [--out spirals.png]
"""

import argparse

import jax
import numpy as np
import optax

import jaxprop as jp
from jaxprop import data, plots

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--epochs", type=int, default=1000)
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--out", default="spirals.png", help="decision boundary plot")
args = parser.parse_args()

ds = data.load("spirals", seed=args.seed)
model = jp.mlp([2, 64, 64, 1], activation="tanh", output_activation="identity")


def show(state, record):
    print(f"epoch {record['epoch']:>5}: loss {record['train_loss']:.4f}  "
          f"train acc {record['train_accuracy']:.3f}  test acc {record['test_accuracy']:.3f}")


params, history = jp.fit(model, "bce_with_logits", optax.adam(1e-2), ds, epochs=args.epochs,
                         key=jax.random.key(args.seed), log_every=args.epochs // 10,
                         callback=show)

predict = jax.jit(lambda g: model.apply(params, g)[:, 0] > 0)
plots.decision_boundary(lambda g: np.asarray(predict(g)).astype(int), ds.x_train,
                        ds.y_train[:, 0], args.out, x_test=ds.x_test,
                        labels_test=ds.y_test[:, 0], title="two spirals")
print(f"compile {history.compile_time:.2f} s; decision boundary saved to {args.out}")
