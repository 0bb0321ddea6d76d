"""How far a set of generated faces is from real ones, in an attribute classifier's eyes.

Two numbers per set of images, both against a reference set of real faces (the held-out
faces), both in the space of `attribute_classifier`:

  frechet          the Fréchet distance between Gaussians fitted to the two sets'
                   penultimate features (FID's formula, Heusel et al. 2017, with the
                   attribute classifier in Inception's place):
                       ‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr (Σ₁^½ Σ₂ Σ₁^½)^½
                   0 for sets with the same statistics; it grows with any difference in
                   the features' means or spreads (blur, wrong colours, mode collapse).
  attribute_gap    the mean over attributes of |f₁ − f₂|, where f is a set's attribute
                   frequency: its mean predicted probability of each attribute. 0 when
                   the samples show glasses, smiles, beards ... as often as the data.

The Fréchet distance of a finite sample is biased upwards by about the trace of the
covariances over the number of images, so it is only compared between sets of the same
size; `scores` cuts every set to the reference's size. Its floor is another set of real
faces (held-out against training faces), which `evaluate` reports beside the samples.
"""

import numpy as np

from sparse_gen_tf.explanation import attribute_classifier


def gaussian_moments(features):
    """(mean [d], covariance [d, d]) of features [N, d], float64 (unbiased covariance)."""
    features = np.asarray(features, np.float64)
    return features.mean(axis=0), np.cov(features, rowvar=False).reshape(
        features.shape[1], features.shape[1])


def symmetric_sqrt(matrix):
    """The square root of a symmetric positive semi-definite matrix [d, d], through its
    eigen-decomposition; round-off's small negative eigenvalues are taken as 0."""
    matrix = (matrix + matrix.T) / 2
    eigenvalues, eigenvectors = np.linalg.eigh(matrix)
    return (eigenvectors * np.sqrt(np.clip(eigenvalues, 0, None))) @ eigenvectors.T


def frechet_distance_of_moments(mean_1, cov_1, mean_2, cov_2):
    """The Fréchet (2-Wasserstein²) distance between N(mean_1, cov_1) and N(mean_2, cov_2).

    tr (Σ₁ Σ₂)^½ is computed as tr (Σ₁^½ Σ₂ Σ₁^½)^½, the same number (the two matrices are
    similar), but the latter is symmetric, so its eigenvalues are real and a symmetric
    eigen-solver gives them stably even when Σ₁ or Σ₂ is singular (fewer images than
    feature dimensions).
    """
    root_1 = symmetric_sqrt(np.asarray(cov_1, np.float64))
    product = root_1 @ np.asarray(cov_2, np.float64) @ root_1
    eigenvalues = np.linalg.eigvalsh((product + product.T) / 2)
    trace_sqrt = np.sqrt(np.clip(eigenvalues, 0, None)).sum()
    difference = np.asarray(mean_1, np.float64) - np.asarray(mean_2, np.float64)
    distance = difference @ difference + np.trace(cov_1) + np.trace(cov_2) - 2 * trace_sqrt
    return float(max(distance, 0.0))


def frechet_distance(features_1, features_2):
    """The Fréchet distance between Gaussians fitted to features [N₁, d] and [N₂, d]."""
    return frechet_distance_of_moments(*gaussian_moments(features_1),
                                       *gaussian_moments(features_2))


def attribute_frequencies(probabilities):
    """Each attribute's frequency in a set: the mean predicted probability [A] of
    probabilities [N, A]. (Thresholding at 0.5 would call a rare attribute absent from
    every set, whatever the set.)"""
    return np.asarray(probabilities, np.float64).mean(axis=0)


def attribute_gap(frequencies_1, frequencies_2):
    """The mean over attributes of |f₁ − f₂|, for frequencies [A] in [0, 1]."""
    return float(np.abs(np.asarray(frequencies_1) - np.asarray(frequencies_2)).mean())


def scores(classifier, reference, image_sets, attribute_names=None):
    """{frechet_<name>, attribute_gap_<name>} of each image set against reference.

    reference: real images [N, H, W, 3] (uint8, or float in [-1, 1]).
    image_sets: {name: images [M, H, W, 3]}; each is cut to min(M, N) images, and the
      reference to the same number, so that every distance has one sample size.
    Also "attribute_frequencies": {"reference": {attribute: f}, name: {attribute: f}, ...}.
    """
    reference_features, reference_probabilities = (
        attribute_classifier.features_and_probabilities(classifier, reference))
    names = [str(n) for n in (attribute_names or range(reference_probabilities.shape[1]))]

    def named(frequencies):
        return dict(zip(names, map(float, frequencies)))

    results = {}
    frequencies = {"reference": named(attribute_frequencies(reference_probabilities))}
    for name, images in image_sets.items():
        n = min(len(images), len(reference))
        features, probabilities = attribute_classifier.features_and_probabilities(
            classifier, images[:n])
        results[f"frechet_{name}"] = frechet_distance(features, reference_features[:n])
        set_frequencies = attribute_frequencies(probabilities)
        results[f"attribute_gap_{name}"] = attribute_gap(
            set_frequencies, attribute_frequencies(reference_probabilities[:n]))
        frequencies[name] = named(set_frequencies)
    results["attribute_frequencies"] = frequencies
    return results
