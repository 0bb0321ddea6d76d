"""The model (§2.1-2.4): the TopK and transposed-convolution layers, the sparse generator
g(z; θ) and the energy-based descriptor f(Y; α)."""
