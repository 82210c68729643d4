"""scikit-learn's 8x8 digits: a 64-64-64-10 ReLU MLP (the 8x8x1 images flattened), softmax
cross-entropy, Adam, minibatches. For a CNN see scripts/train_digits_cnn.py.

    python scripts/train_digits.py [--epochs 15] [--batch-size 64]
"""

import argparse

import jax
import numpy as np
import optax

import jaxprop as jp
from jaxprop import data

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--epochs", type=int, default=15)
parser.add_argument("--batch-size", type=int, default=64)
parser.add_argument("--lr", type=float, default=3e-3)
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()

ds = data.load("digits", seed=args.seed)
print(f"digits: {len(ds.x_train)} training and {len(ds.x_test)} test images, 10 classes")
model = jp.mlp([(8, 8, 1), 64, 64, 10], activation="relu", output_activation="identity")


def show(state, record):
    print(f"epoch {record['epoch']:>3}: loss {record['train_loss']:.4f}  "
          f"train acc {record['train_accuracy']:.3f}  test acc {record['test_accuracy']:.3f}")


params, history = jp.fit(model, "softmax_cross_entropy", optax.adam(args.lr), ds,
                         epochs=args.epochs, batch_size=args.batch_size,
                         key=jax.random.key(args.seed), log_every=1, callback=show)

predicted = np.asarray(model.apply(params, ds.x_test)).argmax(-1)
confusion = np.zeros((10, 10), int)
np.add.at(confusion, (ds.y_test.argmax(-1), predicted), 1)
print("\nconfusion matrix (rows: true digit, columns: predicted)")
print(confusion)
print(f"test accuracy {np.mean(predicted == ds.y_test.argmax(-1)):.4f}; "
      f"compile {history.compile_time:.2f} s")
