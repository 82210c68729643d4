"""The core: layers, losses, networks and the hand-written backward pass.

``layers``: the Layer record, Dense, activations; ``losses``: the Loss record and the losses;
``network``: ``serial``, ``mlp``, ``Model``; ``backprop``: loss and gradient functions;
``checks``: input validation shared by every entry point.
"""
