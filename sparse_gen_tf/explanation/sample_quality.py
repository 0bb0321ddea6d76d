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

import os

import numpy as np

from sparse_gen_tf.errors import UserError
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


def obtain_classifier(path, data, labels, config):
    """The attribute classifier at path, trained there first if the file is missing.

    data: the run's `TrainingData` (uint8 training and held-out images); labels: its
    `attributes.RunLabels`. A new classifier is trained on the training images and their
    labels, scored on the held-out ones for its record; an existing one is reused as it is,
    so that every run of a comparison is scored by the same network.
    """
    if not os.path.exists(path):
        provenance = {"dataset": config.dataset, "data_dir": config.data_dir,
                      "crop": config.crop, "num_images": config.num_images,
                      "heldout": config.heldout, "flip": config.flip,
                      "trained_for": config.workdir}
        attribute_classifier.train(data.images, labels.train, path,
                                   attribute_names=labels.names,
                                   heldout_images=data.heldout,
                                   heldout_labels=labels.heldout, provenance=provenance)
    classifier = attribute_classifier.load(path)
    predicts = classifier.outputs[0].shape[-1]
    record = attribute_classifier.read_record(path) or {}
    if predicts != len(labels.names) or list(record.get("attributes", labels.names)) != list(
            labels.names):
        raise UserError(f"the attribute classifier {path} was trained for other "
                        f"attributes than the {len(labels.names)} of the attribute file; "
                        "pass --classifier=PATH of a new file to train one for these")
    return classifier


def run_scores(classifier_path, classifier, labels, heldout, image_sets):
    """The sample-quality entries of evaluation.json.

    heldout: the run's held-out images [M, H, W, 3] in [-1, 1], the reference;
    labels: its `RunLabels`; image_sets: {name: images in [-1, 1]}, e.g. samples,
    reconstructions, training images.
    Returns `scores` plus "classifier" (the file's absolute path), "classifier_record"
    (what it was trained on, `attribute_classifier.train`), and the classifier's scores on
    these held-out labels: "classifier_heldout" (`held_out_scores`) and its
    "classifier_auc_mean".
    """
    names = list(labels.names)
    on_heldout = attribute_classifier.held_out_scores(
        classifier, heldout, labels.heldout[:len(heldout)], names)
    results = {"classifier": os.path.abspath(classifier_path),
               "classifier_record": {key: value for key, value in (
                   attribute_classifier.read_record(classifier_path) or {}).items()
                   if key != "heldout"},
               "classifier_auc_mean": on_heldout["auc_mean"],
               "classifier_heldout": on_heldout}
    results.update(scores(classifier, heldout, image_sets, names))
    return results
