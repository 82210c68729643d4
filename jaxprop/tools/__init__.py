"""Tools for people checking backpropagation by hand: gradient checks and worked examples.
Nothing here prints; ``jaxprop.cli`` renders the results."""
