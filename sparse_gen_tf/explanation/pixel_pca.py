"""Pixel PCA, the baseline of dissection.py: a linear code of the generator's size.

The principal directions of the training images' pixels are the best linear code of d
numbers for them (in squared error), so a unit of the generator that detects an
attribute better than any PCA coefficient shows more than pixel statistics.
"""

import numpy as np


def pixel_pca(images, num_components, seed=0, power_iterations=4):
    """The mean [D] and leading principal directions [k, D] of images [N, ...] flattened
    to D pixels, k = min(num_components, N, D), by randomized SVD (Halko et al., 2011):
    a few products with the [N, D] images rather than an SVD of them. The centred
    matrix is never formed: (X - 1 mean) W = X W - mean W."""
    x = np.asarray(images, np.float32).reshape(len(images), -1)
    mean = x.mean(0)
    k = min(num_components, *x.shape)
    width = min(k + 10, *x.shape)  # oversampling makes the leading k accurate

    def times(m):  # (X - 1 mean) m
        return x @ m - mean @ m

    def transposed_times(m):  # (X - 1 mean)^T m
        return x.T @ m - np.outer(mean, m.sum(0))

    rng = np.random.default_rng(seed)
    subspace = np.linalg.qr(times(rng.standard_normal((x.shape[1], width)).astype(np.float32)))[0]
    for _ in range(power_iterations):  # sharpens the spectrum's decay
        subspace = np.linalg.qr(times(np.linalg.qr(transposed_times(subspace))[0]))[0]
    _, _, directions = np.linalg.svd(transposed_times(subspace).T, full_matrices=False)
    return mean, directions[:k]


def pca_coefficients(images, mean, directions):
    """Coefficients [M, k] of images [M, ...] on the directions [k, D] of `pixel_pca`."""
    x = np.asarray(images, np.float32).reshape(len(images), -1)
    return (x - mean) @ directions.T
