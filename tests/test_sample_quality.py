"""The sample-quality scores: the Fréchet distance and the attribute gap on known inputs,
and the attribute classifier trained on a tiny generated set whose attributes are
visible (a red square, a blue bar)."""

import json

import numpy as np
import pytest

from conftest import assert_flag_error

from sparse_gen_tf.errors import UserError
from sparse_gen_tf.explanation import attribute_classifier, sample_quality


def test_frechet_distance_of_a_set_with_itself_is_zero():
    features = np.random.default_rng(0).normal(size=[500, 16]) @ np.diag(np.arange(1, 17))
    assert sample_quality.frechet_distance(features, features) == pytest.approx(0, abs=1e-6)


def test_frechet_distance_matches_the_closed_form_of_two_gaussians():
    # For 2x2 covariances, tr (A^½ B A^½)^½ = sqrt(tr AB + 2 sqrt(det A det B)): a formula
    # that takes no matrix square root, for covariances that do not commute.
    mean_1, mean_2 = np.array([0.0, 1.0]), np.array([2.0, -1.0])
    cov_1 = np.array([[2.0, 0.8], [0.8, 1.0]])
    cov_2 = np.array([[0.5, -0.3], [-0.3, 3.0]])
    trace_sqrt = np.sqrt(np.trace(cov_1 @ cov_2)
                         + 2 * np.sqrt(np.linalg.det(cov_1) * np.linalg.det(cov_2)))
    expected = 8.0 + np.trace(cov_1) + np.trace(cov_2) - 2 * trace_sqrt
    assert sample_quality.frechet_distance_of_moments(mean_1, cov_1, mean_2, cov_2) == (
        pytest.approx(expected, rel=1e-9))
    # Diagonal covariances: Σ_i (σ₁ᵢ − σ₂ᵢ)² plus the squared mean shift.
    assert sample_quality.frechet_distance_of_moments(
        mean_1, np.diag([4.0, 9.0]), mean_2, np.diag([1.0, 1.0])) == pytest.approx(
        8.0 + (2 - 1) ** 2 + (3 - 1) ** 2)
    # Estimated from samples, it approaches the same value.
    rng = np.random.default_rng(1)
    samples_1 = rng.multivariate_normal(mean_1, cov_1, size=200_000)
    samples_2 = rng.multivariate_normal(mean_2, cov_2, size=200_000)
    assert sample_quality.frechet_distance(samples_1, samples_2) == pytest.approx(
        expected, rel=0.02)


def test_frechet_distance_grows_with_a_mean_shift():
    features = np.random.default_rng(2).normal(size=[400, 8])
    distances = [sample_quality.frechet_distance(features, features + shift)
                 for shift in (0.0, 0.5, 1.0, 2.0)]
    assert distances == pytest.approx([0.0, 8 * 0.25, 8 * 1.0, 8 * 4.0], abs=1e-6)


def test_frechet_distance_is_finite_with_fewer_images_than_features():
    rng = np.random.default_rng(3)
    small, other = rng.normal(size=[10, 32]), rng.normal(size=[10, 32]) + 1
    assert sample_quality.frechet_distance(small, small) == pytest.approx(0, abs=1e-6)
    assert np.isfinite(sample_quality.frechet_distance(small, other))


def test_attribute_gap_is_zero_for_the_same_set_and_the_mean_absolute_difference():
    probabilities = np.random.default_rng(4).uniform(size=[50, 3])
    frequencies = sample_quality.attribute_frequencies(probabilities)
    assert sample_quality.attribute_gap(frequencies, frequencies) == 0.0
    # A set that always shows attribute 0, never 1, and 2 half the time, against one that
    # shows each a quarter of the time.
    samples = np.array([[1.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    data = np.full([4, 3], 0.25)
    assert sample_quality.attribute_gap(sample_quality.attribute_frequencies(samples),
                                        sample_quality.attribute_frequencies(data)) == (
        pytest.approx((0.75 + 0.25 + 0.25) / 3))


def visible_attributes(n, seed, size=32):
    """n images [n, size, size, 3] uint8 of grey noise, with labels [n, 2]: attribute 0
    ("Eyeglasses") a red square at the top left, attribute 1 ("Smiling") a blue bar at
    the bottom, each present in about half of the images, independently."""
    rng = np.random.default_rng(seed)
    images = rng.integers(60, 140, [n, size, size, 3]).astype(np.uint8)
    labels = rng.uniform(size=[n, 2]) < 0.5
    images[labels[:, 0], 4:12, 4:12] = [220, 30, 30]
    images[labels[:, 1], 24:28, 6:26] = [30, 30, 220]
    return images, labels


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The classifier trained on 192 generated images (3 epochs), with 64 held out."""
    path = str(tmp_path_factory.mktemp("classifier") / "attributes.keras")
    images, labels = visible_attributes(192, seed=0)
    heldout, heldout_labels = visible_attributes(64, seed=1)
    model = attribute_classifier.train(
        images, labels, path, attribute_names=["Eyeglasses", "Smiling"],
        heldout_images=heldout, heldout_labels=heldout_labels, epochs=3, batch_size=32,
        feature_width=32)
    return path, model, heldout, heldout_labels


def test_the_classifier_learns_visible_attributes_beyond_chance(trained):
    path, model, heldout, heldout_labels = trained
    scores = attribute_classifier.held_out_scores(model, heldout, heldout_labels,
                                                  ["Eyeglasses", "Smiling"])
    assert min(scores["auc"].values()) > 0.9, scores
    assert scores["accuracy_mean"] > scores["majority_accuracy_mean"] + 0.2, scores
    with open(attribute_classifier.record_path(path)) as f:
        record = json.load(f)
    assert record["attributes"] == ["Eyeglasses", "Smiling"] and record["num_images"] == 192
    assert record["heldout"]["auc"] == pytest.approx(scores["auc"])


def test_a_reloaded_classifier_gives_the_same_features(trained):
    path, model, heldout, _ = trained
    features, probabilities = attribute_classifier.features_and_probabilities(model, heldout)
    again = attribute_classifier.features_and_probabilities(
        attribute_classifier.load(path), heldout)
    assert features.shape == (64, 32) and probabilities.shape == (64, 2)
    np.testing.assert_array_equal(again[0], features)
    np.testing.assert_array_equal(again[1], probabilities)


def test_the_classifier_takes_any_image_size_and_either_range(trained):
    _, model, heldout, _ = trained
    as_float = heldout.astype(np.float32) / 127.5 - 1
    np.testing.assert_allclose(
        attribute_classifier.features_and_probabilities(model, as_float)[1],
        attribute_classifier.features_and_probabilities(model, heldout)[1], atol=1e-5)
    larger = np.repeat(np.repeat(heldout, 2, axis=1), 2, axis=2)  # 64 x 64
    assert attribute_classifier.features_and_probabilities(model, larger)[0].shape == (64, 32)


def test_the_scores_rank_real_images_above_blank_and_biased_ones(trained):
    _, model, heldout, _ = trained
    others, _ = visible_attributes(64, seed=2)
    blank = np.full_like(heldout, 100)  # no squares, no noise
    all_red = others.copy()
    all_red[:, 4:12, 4:12] = [220, 30, 30]  # every image shows attribute 0
    scores = sample_quality.scores(model, heldout,
                                   {"train": others, "blank": blank, "all_red": all_red},
                                   ["Eyeglasses", "Smiling"])
    assert scores["frechet_train"] < scores["frechet_blank"] / 4, scores
    assert scores["frechet_train"] < scores["frechet_all_red"], scores
    assert scores["attribute_gap_train"] < 0.1 < scores["attribute_gap_all_red"], scores
    frequencies = scores["attribute_frequencies"]
    assert frequencies["all_red"]["Eyeglasses"] > frequencies["reference"]["Eyeglasses"] + 0.1
    assert abs(frequencies["train"]["Eyeglasses"]
               - frequencies["reference"]["Eyeglasses"]) < 0.15


@pytest.mark.parametrize("write, message", [
    (None, "no attribute classifier at"),
    ("not a zip file", "is not an attribute classifier"),
])
def test_a_missing_or_corrupt_classifier_fails_in_one_line(tmp_path, write, message):
    path = tmp_path / "classifier.keras"
    if write is not None:
        path.write_text(write)
    with pytest.raises(UserError, match=message):
        attribute_classifier.load(str(path))


def test_a_classifier_path_must_end_in_keras(tmp_path):
    images, labels = visible_attributes(4, seed=0)
    with pytest.raises(UserError, match="ending in .keras"):
        attribute_classifier.train(images, labels, str(tmp_path / "classifier.h5"))


# The evaluate command on a tiny folder run whose images carry the two attributes.


def write_attribute_file(path, files, labels, names=("Eyeglasses", "Smiling")):
    """An attribute file in CelebA's format for files with labels [n, A]."""
    rows = [name + "".join("  1" if v else " -1" for v in row)
            for name, row in zip(files, labels)]
    path.write_text("\n".join([str(len(rows)), " ".join(names) + " ", *rows]) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def labelled_run(tmp_path_factory, commands):
    """A run trained for two steps on 40 generated 32x32 images (`visible_attributes`),
    the last 8 held out, and their attribute file."""
    import tensorflow as tf
    root = tmp_path_factory.mktemp("labelled")
    images, labels = visible_attributes(40, seed=5)
    (root / "images").mkdir()
    files = [f"{i:06d}.png" for i in range(len(images))]
    for name, image in zip(files, images):
        tf.io.write_file(str(root / "images" / name), tf.io.encode_png(image))
    attributes = write_attribute_file(root / "list_attr.txt", files, labels)
    workdir = str(root / "run")
    result = commands.train(f"--workdir={workdir}", "--dataset=folder",
                            f"--data_dir={root / 'images'}", "--heldout=8", "--train_steps=2",
                            *commands.tiny)
    assert result.returncode == 0, result.stderr[-3000:]
    return root, workdir, attributes


def evaluate_with_attributes(commands, workdir, *flags):
    return commands.evaluate(f"--workdir={workdir}", "--num_heldout=8", "--noserved",
                             "--nobaseline", *commands.fast_inference, *flags)


@pytest.mark.slow
def test_evaluate_scores_samples_reconstructions_and_training_faces_with_one_classifier(
        labelled_run, commands):
    root, workdir, attributes = labelled_run
    classifier = root / "classifier.keras"
    first = evaluate_with_attributes(commands, workdir, f"--attributes={attributes}",
                                     f"--classifier={classifier}")
    assert first.returncode == 0, first.stderr[-3000:]
    with open(f"{workdir}/evaluation.json") as f:
        scores = json.load(f)
    assert scores["classifier"] == str(classifier)
    assert scores["classifier_record"]["num_images"] == 32  # the run's training faces
    assert scores["classifier_heldout"]["num_images"] == 8
    assert 0 <= scores["classifier_auc_mean"] <= 1
    for name in ("samples", "reconstructions", "train"):
        assert scores[f"frechet_{name}"] >= 0
        assert 0 <= scores[f"attribute_gap_{name}"] <= 1
        assert set(scores["attribute_frequencies"][name]) == {"Eyeglasses", "Smiling"}
    assert "| Fréchet distance, training faces (floor) |" in first.stdout
    assert "| Attribute-frequency gap, samples |" in first.stdout

    # A second evaluation reuses the file: the same network scores the same faces alike.
    saved = classifier.stat().st_mtime_ns
    second = evaluate_with_attributes(commands, workdir, f"--attributes={attributes}",
                                      f"--classifier={classifier}")
    assert second.returncode == 0, second.stderr[-3000:]
    with open(f"{workdir}/evaluation.json") as f:
        again = json.load(f)
    assert classifier.stat().st_mtime_ns == saved
    assert again["frechet_train"] == pytest.approx(scores["frechet_train"], rel=1e-6)
    assert again["classifier_heldout"] == scores["classifier_heldout"]


@pytest.mark.slow
def test_a_classifier_flag_that_is_not_a_keras_file_is_refused(labelled_run, commands):
    _, workdir, attributes = labelled_run
    result = evaluate_with_attributes(commands, workdir, f"--attributes={attributes}",
                                      "--classifier=classifier.h5")
    assert_flag_error(result, "--classifier must be a .keras file")


@pytest.mark.slow
def test_a_classifier_of_other_attributes_is_refused_in_one_line(labelled_run, commands,
                                                                tmp_path):
    _, workdir, attributes = labelled_run
    path = str(tmp_path / "other.keras")
    attribute_classifier.build(3, feature_width=8).save(path)
    result = evaluate_with_attributes(commands, workdir, f"--attributes={attributes}",
                                      f"--classifier={path}")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "was trained for other attributes than the 2 of the attribute file" in (
        commands.last_line(result.stderr))


def test_the_same_images_and_seed_train_the_same_classifier(tmp_path):
    images, labels = visible_attributes(64, seed=6)

    def probabilities(name, seed):
        model = attribute_classifier.train(images, labels, str(tmp_path / name), epochs=1,
                                           batch_size=16, feature_width=16, seed=seed)
        return attribute_classifier.features_and_probabilities(model, images)[1]

    first = probabilities("a.keras", seed=0)
    np.testing.assert_allclose(probabilities("b.keras", seed=0), first, atol=1e-6)
    assert np.abs(probabilities("c.keras", seed=1) - first).max() > 1e-3
