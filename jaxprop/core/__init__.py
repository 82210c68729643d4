"""The core: layers, losses, networks and the hand-written backward pass.

``layers``: the Layer record, Dense, activations, Flatten, Reshape, Dropout; ``conv``: Conv2D,
MaxPool2D, AvgPool2D; ``norm``: LayerNorm, BatchNorm; ``losses``: the Loss record and the
losses; ``network``: ``serial``, ``mlp``, ``Model``, ``Residual``; ``spec``: architectures as
text; ``backprop``: loss and gradient functions; ``checks``: input validation shared by every
entry point.
"""
