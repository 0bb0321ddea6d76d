"""Scores of a learned generator against the ground truth of the embedded parts dataset.

The parts grammar (data/parts.py) paints each of the 4x4 cells of an image with one part,
pixel = -1 + s * (part + 1); the default generator's bottom feature map is 4x4 and each
bottom unit paints its cell with its kernel. The scores:

* dictionary recovery: for each true part, the best normalized correlation r with any
  learned bottom basis function; the mean over parts.
* kernel purity: of the bottom kernels in use, the fraction with |r| > 0.9 to some part.
* parse accuracy: the dominant OR node of each bottom AND cell, mapped to a part by the
  majority vote fitted on training parses, against the true part of the cell.
* PSNR of reconstructions.

Comparing basis functions with parts. A bottom unit adds s * ker to the logits, over the
image layer's bias; what it contributes to the image is the patch it paints, tanh(bias_n
+ s ker), at its typical coefficient s (its mean over the training parses; channels that
never survive take the mean of the others). tanh is monotone, so this patch is large exactly
where the kernel is, but unlike the raw kernel it does not carry the arbitrary depth of the
saturated background (a logit of -4 and one of -9 both paint black). The patch, cropped to
the unit's own cell (all of it when kernel = stride), is compared with the part by Pearson
r over pixels and colour channels; r subtracts each one's mean (the background level) and
ignores scale.
"""

import numpy as np

from sparse_gen_tf.explanation import basis as basis_lib

PURE = 0.9  # |r| above which a kernel counts as one clean part


def check_geometry(config, cell):
    """Returns a sentence saying why `config` cannot be scored on parts cells, or None."""
    h = config.feature_map_shapes()[-1][0]
    if h * cell != config.image_size or config.strides[-1] != cell:
        return (f"the parts scores need a bottom feature map of one unit per cell "
                f"({config.image_size // cell}x{config.image_size // cell}, last stride "
                f"{cell}); this generator's is {h}x{h} with last stride "
                f"{config.strides[-1]}")
    return None


def bottom_patches(generator, z):
    """The bottom basis functions as painted patches, cropped to each unit's own cell:
    [channels, s, s, 3] in [-1, 1], at each channel's mean coefficient over the parses of
    z; also returns the bool [channels] of channels that survive in some parse of z."""
    count, mean = basis_lib.mean_coefficients(generator, z, generator.num_layers)
    used = count > 0
    patches = basis_lib.painted_kernels(
        generator, np.where(used, mean, mean[used].mean() if used.any() else 1.0))
    deconv = generator.deconvs[-1]
    k, s = deconv.kernel_size, deconv.strides
    pad = (k - s) // 2
    return patches[:, pad:pad + s, pad:pad + s, :], used


def correlations(a, b):
    """Pearson r of every row of a [n, ...] with every row of b [m, ...]: [n, m]."""
    a = np.reshape(a, (len(a), -1)).astype(np.float64)
    b = np.reshape(b, (len(b), -1)).astype(np.float64)
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    a /= np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b /= np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return a @ b.T


def dictionary_recovery(patches, parts):
    """(mean over parts of the best r, [num_parts] best r, [num_parts] best channel)."""
    r = correlations(parts, patches)
    return float(r.max(1).mean()), r.max(1), r.argmax(1)


def kernel_purity(patches, parts, in_use):
    """(fraction of in-use kernels with max |r| > PURE, number pure, number in use)."""
    r = np.abs(correlations(patches, parts)).max(1)
    used = np.asarray(in_use, bool)
    pure = int((r[used] > PURE).sum())
    return pure / max(int(used.sum()), 1), pure, int(used.sum())


def bottom_contributions(generator, z, chunk=16):
    """Energy ‖s_j B_j‖ of every bottom channel at every bottom location: [N, h, w, c].

    Zero where the channel does not survive. Runs in chunks of z to bound the memory of
    the one-hot pass for dense layers.
    """
    z = np.asarray(z, np.float32)
    n = generator.num_layers
    out = []
    for start in range(0, len(z), chunk):
        parse = generator.parse(z[start:start + chunk])
        found = basis_lib.basis_functions(generator, parse, n)
        energy = np.sqrt(np.sum(np.square(np.asarray(found["basis"])), axis=(2, 3, 4)))
        energy *= np.asarray(found["coefficient"])
        position = np.asarray(found["position"])
        table = np.zeros(np.asarray(parse["activations"][-1]).shape, np.float32)
        b = np.repeat(np.arange(len(table)), position.shape[1])
        y, x, c = position.reshape(-1, 3).T
        np.add.at(table, (b, y, x, c), energy.reshape(-1))
        out.append(table)
    return np.concatenate(out)


def dominant_channels(contributions):
    """The dominant OR node of each bottom AND cell: [N, h, w] channel, -1 if none."""
    best = contributions.argmax(-1)
    return np.where(contributions.max(-1) > 0, best, -1)


def fit_channel_parts(dominant, part_labels, num_channels):
    """Majority part of each channel where it dominates a cell: [channels], -1 if never."""
    votes = np.zeros((num_channels, int(part_labels.max()) + 1), np.int64)
    keep = dominant >= 0
    np.add.at(votes, (dominant[keep], part_labels[keep]), 1)
    return np.where(votes.sum(1) > 0, votes.argmax(1), -1)


def parse_accuracy(dominant, channel_parts, part_labels):
    """Fraction of cells whose dominant channel maps to the true part."""
    predicted = np.where(dominant >= 0, channel_parts[np.maximum(dominant, 0)], -1)
    return float(np.mean(predicted == part_labels))


def psnr(images, reconstructions):
    """PSNR in dB of the whole set (mean squared error over all pixels), range [-1, 1]."""
    mse = np.mean(np.square(np.asarray(images, np.float64) - np.asarray(reconstructions)))
    return float(10.0 * np.log10(4.0 / max(mse, 1e-12)))


# A cell is clean when one part (or the bare background) explains it to this PSNR, a
# threshold well between the data's own cells and blends of two parts (docs/grammar_prior.md).
CLEAN_CELL_PSNR = 20.0
# Intensities a clean part may have: the grammar's COEFFICIENT_RANGE (0.6, 1.0) with a
# margin of 0.05 for the model's smooth output.
INTENSITY_RANGE = (0.55, 1.05)


def cell_fits(images, parts):
    """The best one-part explanation of every cell of images [N, H, W, 3] in [-1, 1].

    A cell with part p at intensity s is -1 + s (parts[p] + 1) (data/parts.py); s is the
    least-squares fit, and "empty" (p = -1) is the background alone, s = 0.
    Returns (part [N, 4, 4] int, -1 for empty; intensity s [N, 4, 4]; PSNR of the fit in
    dB [N, 4, 4]).
    """
    images = np.asarray(images, np.float64)
    n, size = images.shape[:2]
    cell = size // 4
    deviation = (images.reshape(n, 4, cell, 4, cell, 3).transpose(0, 1, 3, 2, 4, 5)
                 .reshape(n, 4, 4, -1) + 1.0)  # [N, 4, 4, D]
    atoms = np.asarray(parts, np.float64).reshape(len(parts), -1) + 1.0  # [P, D]
    dot = deviation @ atoms.T  # [N, 4, 4, P]
    energy = (atoms ** 2).sum(1)
    total = (deviation ** 2).sum(-1, keepdims=True)
    residual = np.concatenate([total, total - dot ** 2 / energy], -1)  # empty, parts
    best = residual.argmin(-1)
    part = best - 1
    intensity = np.where(part >= 0, np.take_along_axis(
        dot / energy, np.maximum(part, 0)[..., None], -1)[..., 0], 0.0)
    mse = np.maximum(np.take_along_axis(residual, best[..., None], -1)[..., 0], 0.0)
    return part, intensity, 10.0 * np.log10(4.0 / np.maximum(mse / atoms.shape[1], 1e-12))


def legal_quadrants(images, truth):
    """bool [N, 4]: which quadrants of images [N, H, W, 3] in [-1, 1] are legal
    derivations of the grammar (`grammar_validity`)."""
    part, intensity, fit_psnr = cell_fits(images, truth.parts)
    low, high = INTENSITY_RANGE
    clean = (fit_psnr >= CLEAN_CELL_PSNR) & (
        (part < 0) | ((intensity >= low) & (intensity <= high)))
    legal = []
    for q in range(4):
        rows, cols = slice(2 * (q // 2), 2 * (q // 2) + 2), slice(2 * (q % 2), 2 * (q % 2) + 2)
        cells = part[:, rows, cols].reshape(len(part), 1, 4)
        composites = truth.composites[q].reshape(1, -1, 4)
        is_composite = (cells == composites).all(-1).any(-1)
        legal.append(is_composite & clean[:, rows, cols].reshape(len(part), 4).all(-1))
    return np.stack(legal, 1)


def grammar_validity(images, truth):
    """How often images [N, H, W, 3] in [-1, 1] are legal derivations of the grammar.

    A cell is clean when one dictionary part at an intensity in INTENSITY_RANGE, or
    nothing, explains it to CLEAN_CELL_PSNR. A quadrant is legal when its four cells are
    clean and their parts are one of that quadrant's composites (`truth.composites`).
    Returns (fraction of legal quadrants, fraction of clean cells).
    """
    part, intensity, fit_psnr = cell_fits(images, truth.parts)
    low, high = INTENSITY_RANGE
    clean = (fit_psnr >= CLEAN_CELL_PSNR) & (
        (part < 0) | ((intensity >= low) & (intensity <= high)))
    return float(np.mean(legal_quadrants(images, truth))), float(clean.mean())
