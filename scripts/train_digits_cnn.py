"""scikit-learn's 8x8 digits with a small CNN: two 3x3 convolutions, max pooling, dropout, every
backward pass written by hand; softmax cross-entropy, Adam, minibatches of 64.

    python scripts/train_digits_cnn.py [--epochs 20] [--batch-size 64] [--lr 3e-3] [--seed 0]

The same network from the command line:

    jaxprop train --dataset digits --model "conv(16,3)-relu-maxpool(2)-conv(32,3)-relu-flatten-dense(64)-relu-dropout(0.2)-dense(10)"
"""

import argparse
import time

import jax
import numpy as np
import optax

import jaxprop as jp
from jaxprop import data

ARCHITECTURE = ("conv(16,3)-relu-maxpool(2)-conv(32,3)-relu-flatten-dense(64)-relu-dropout(0.2)"
                "-dense(10)")

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--epochs", type=int, default=20)
parser.add_argument("--batch-size", type=int, default=64)
parser.add_argument("--lr", type=float, default=3e-3)
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()

ds = data.load("digits", seed=args.seed)  # images (n, 8, 8, 1), standardised per channel
print(f"digits: {len(ds.x_train)} training and {len(ds.x_test)} test images of shape "
      f"{ds.example_shape}, 10 classes")
# the same as jp.serial(jp.Conv2D(16, 3), jp.Relu(), jp.MaxPool2D(2), ..., in_shape=(8, 8, 1))
model = jp.parse_model(ARCHITECTURE, ds.example_shape)
print(model.describe())


def show(state, record):
    print(f"epoch {record['epoch']:>3}: loss {record['train_loss']:.4f}  "
          f"train acc {record['train_accuracy']:.3f}  test acc {record['test_accuracy']:.3f}")


t0 = time.perf_counter()
params, history = jp.fit(model, "softmax_cross_entropy", optax.adam(args.lr), ds,
                         epochs=args.epochs, batch_size=args.batch_size,
                         key=jax.random.key(args.seed), log_every=1, callback=show)
wall = time.perf_counter() - t0

predicted = np.asarray(model.apply(params, ds.x_test)).argmax(-1)  # evaluation: no dropout
print(f"test accuracy {np.mean(predicted == ds.y_test.argmax(-1)):.4f}; {wall:.1f} s in all "
      f"(compile {history.compile_time:.1f} s) on {jax.devices()[0].platform}")
