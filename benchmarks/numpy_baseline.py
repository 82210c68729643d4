"""The NumPy baseline (it lives in ``jaxprop.bench.numpy_baseline`` so ``jaxprop bench`` has it).

    python benchmarks/numpy_baseline.py   # the classic 2-4-1 sigmoid XOR, 10,000 epochs
"""

from jaxprop.bench.numpy_baseline import (  # noqa: F401
    ACTIVATIONS, LOSSES, XOR_T, XOR_X, NumpyMLP, from_jaxprop, main,
)

if __name__ == "__main__":
    main()
