"""Scores of "the kernels are parts" and of image detail that need no ground truth.

Location specificity (docs/explanation.md). On aligned images (faces) a part sits at the
same place in every image, so a unit that is a part (an eye kernel) fires at one AND cell
(the eye's cell) and nowhere else, while a unit that paints a little of everything fires
everywhere. For channel c of a sparse layer, with s_{n,y,x,c} its coefficients over the
parses of N images (zero where TopK or ReLU cut them, Eq. 1), the energy at cell (y, x) is

    E_c(y, x) = Σ_n s_{n,y,x,c}²,

which for the bottom layer is the energy Σ_n ‖s_j ker_c‖² that the unit paints at that
cell, up to the constant ‖ker_c‖² (Eq. 3). The channel's specificity is the share of its
energy at its most-used cell, max_{y,x} E_c(y, x) / Σ_{y,x} E_c(y, x): 1 when it fires at one
cell only, 1 / (h w) when it fires equally everywhere. The layer's score is the mean over
the channels in use (E_c > 0 somewhere). For the paper's faces architecture the bottom
layer has 4×4 cells (uniform 0.0625) and the top layer 2×2 quadrants (uniform 0.25).

Sharpness: the energy of the discrete Laplacian of images, relative to the data's. A
blurry model paints less high-frequency detail than the data has (< 1); cell seams and
noise add some (> 1 is possible).
"""

import numpy as np


def cell_energies(activations):
    """E_c(y, x) of one layer: [h, w, c] from activations [N, h, w, c] (Σ_n s²)."""
    a = np.asarray(activations, np.float64)
    return np.square(a).sum(axis=0)


def location_specificity(energies):
    """(mean over channels in use of max_cell E_c / Σ_cells E_c, channels in use) for
    cell energies [h, w, c] (`cell_energies`, possibly summed over batches); (nan, 0) when
    no channel is in use."""
    e = np.asarray(energies, np.float64)
    e = e.reshape(-1, e.shape[-1])  # [cells, c]
    total = e.sum(axis=0)
    used = total > 0
    if not used.any():
        return float("nan"), 0
    return float((e.max(axis=0)[used] / total[used]).mean()), int(used.sum())


def layer_specificities(generator, z, batch=128):
    """{specificity_i, specificity_uniform_i} for every sparse layer i (1 = top) of the
    parses of z [N, d], e.g. the training chains; uniform_i = 1 / (h_i w_i) is the score
    of a channel that fires equally at every cell."""
    energies = None
    for chunk in np.array_split(z, max(1, -(-len(z) // batch))):
        parts = [cell_energies(a) for a in generator.parse(chunk)["activations"]]
        energies = parts if energies is None else [e + p for e, p in zip(energies, parts)]
    scores = {}
    for i, e in enumerate(energies, 1):
        scores[f"specificity_{i}"] = location_specificity(e)[0]
        scores[f"specificity_uniform_{i}"] = 1.0 / (e.shape[0] * e.shape[1])
    return scores


def laplacian_energy(images):
    """Mean squared 4-neighbour Laplacian of images [N, H, W, C], interior pixels."""
    x = np.asarray(images, np.float64)
    lap = (x[:, :-2, 1:-1] + x[:, 2:, 1:-1] + x[:, 1:-1, :-2] + x[:, 1:-1, 2:]
           - 4.0 * x[:, 1:-1, 1:-1])
    return float(np.square(lap).mean())


def sharpness(images, data):
    """Laplacian energy of images relative to that of data (both [N, H, W, C], same range)."""
    return laplacian_energy(images) / max(laplacian_energy(data), 1e-12)


__all__ = ["cell_energies", "laplacian_energy", "layer_specificities",
           "location_specificity", "sharpness"]
