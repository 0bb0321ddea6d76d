"""Specification of network dissection (dissection.py): the rank AUC, the firing
threshold, the choice on one half and the score on the other, the pixel-PCA baseline,
and `evaluate --attributes` / `explain` on a tiny trained face-like run."""

import itertools
import json
import os
import types

import numpy as np
import pytest
import tensorflow as tf

from conftest import (FAST_INFERENCE_FLAGS, TINY_TRAIN_FLAGS, assert_flag_error, run_command,
                      train_ok)
from sparse_gen_tf.errors import UserError
from sparse_gen_tf.explanation import dissection, pixel_pca


def column(*values):
    return np.asarray(values, np.float64)[:, None]


# roc_auc


def test_auc_of_known_rankings():
    labels = np.array([0, 1, 0, 1], bool)
    # Positives 2 and 4 against negatives 1 and 3: 3 of the 4 pairs ordered right.
    assert dissection.roc_auc(column(1, 2, 3, 4), labels)[0, 0] == 0.75
    assert dissection.roc_auc(column(0, 5, 1, 7), labels)[0, 0] == 1.0
    assert dissection.roc_auc(column(9, 5, 8, 7), labels)[0, 0] == 0.0


def test_ties_count_half_and_a_constant_unit_scores_one_half():
    assert dissection.roc_auc(column(0, 0, 1, 1), [0, 1, 0, 1])[0, 0] == 0.5
    # Positives 0 and 1 against negatives 0 and 0: two ties and two wins.
    assert dissection.roc_auc(column(0, 0, 0, 1), [0, 0, 1, 1])[0, 0] == 0.75
    assert dissection.roc_auc(np.zeros((6, 3)), [0, 1, 1, 0, 0, 1])[0].tolist() == [0.5] * 3


def test_auc_is_the_fraction_of_ordered_pairs_for_every_unit_and_attribute():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, (30, 5)).astype(float)  # many ties
    scores[:, 4] = 0.0
    labels = rng.random((30, 3)) < 0.4
    auc = dissection.roc_auc(scores, labels)
    assert auc.shape == (3, 5)
    for a, u in itertools.product(range(3), range(5)):
        pos, neg = scores[labels[:, a], u], scores[~labels[:, a], u]
        pairs = (pos[:, None] > neg[None]).mean() + 0.5 * (pos[:, None] == neg[None]).mean()
        assert auc[a, u] == pytest.approx(pairs)


def test_auc_is_nan_when_every_face_or_none_has_the_attribute():
    auc = dissection.roc_auc(column(1, 2, 3), np.array([[1, 0], [1, 0], [1, 0]], bool))
    assert np.isnan(auc).all()


# the binarised units


def test_each_unit_fires_on_at_most_its_top_sixteenth():
    graded = np.arange(32.0)                       # 32 faces: the top 2 fire
    sparse = np.zeros(32)
    sparse[[3, 9]] = [0.5, 2.0]                    # non-zero on 1/16: both fire
    rare = np.zeros(32)
    rare[7] = 1.0                                  # non-zero on one face: it fires there
    tied = np.r_[np.zeros(28), np.ones(4)]         # 4 tied at the top: none may fire
    scores = np.stack([graded, sparse, rare, tied, np.zeros(32)], 1)
    fires = scores > dissection.firing_thresholds(scores, 1 / 16)
    assert fires.sum(0).tolist() == [2, 2, 1, 0, 0]
    assert fires[30:, 0].all() and fires[[3, 9], 1].all() and fires[7, 2]


def test_balanced_accuracy_averages_the_two_rates():
    fires = np.array([1, 1, 0, 0, 0, 0], bool)[:, None]
    labels = np.array([1, 0, 1, 0, 0, 0], bool)
    # TPR 1/2, TNR 3/4.
    assert dissection.balanced_accuracy(fires, labels)[0, 0] == pytest.approx(0.625)
    assert dissection.balanced_accuracy(np.zeros((6, 1), bool), labels)[0, 0] == 0.5


# the protocol on a planted code


def test_halves_are_disjoint_fixed_and_depend_only_on_the_number_of_faces():
    a, b = dissection.halves(101)
    assert len(a) == 50 and len(b) == 51
    assert sorted(np.r_[a, b].tolist()) == list(range(101))
    again = dissection.halves(101)
    np.testing.assert_array_equal(a, again[0])
    assert not np.array_equal(a, np.arange(50))  # a random split, not the first half


class Code:
    """A stand-in generator whose parse is a given synthetic code: one sparse layer of
    shape (h, w, c) whose activations are z itself, [M, h*w*c]."""

    def __init__(self, shape):
        self.shape, self.num_layers = shape, 1
        self.config = types.SimpleNamespace(latent_dim=3,
                                            feature_map_shapes=lambda: [shape])

    def parse(self, z):
        return {"activations": [tf.reshape(tf.constant(z, tf.float32), (-1, *self.shape))]}


SHAPE = (2, 3, 8)  # 48 units; unit (y, x, c) is column (y*3 + x)*8 + c


def planted(num_faces=800, seed=1):
    """A sparse random code [M, 48] and labels of two attributes: "Eyeglasses", on 5%
    of the faces, and "No_Beard", on 70%."""
    rng = np.random.default_rng(seed)
    code = rng.exponential(1.0, (num_faces, 48)) * (rng.random((num_faces, 48)) < 0.08)
    labels = np.stack([rng.random(num_faces) < 0.05, rng.random(num_faces) < 0.7], 1)
    return code, labels


def run_dissect(code, labels, names=("Eyeglasses", "No_Beard"), **kwargs):
    rng = np.random.default_rng(0)
    faces = rng.uniform(-1, 1, (len(code), 4, 4, 3))
    train = rng.uniform(-1, 1, (40, 4, 4, 3))
    return dissection.dissect(Code(SHAPE), code, faces, train, labels, names,
                              wanted=names, **kwargs)


def record(result, attribute, source="1"):
    return next(r for r in result["detectors"]
                if r["attribute"] == attribute and r["source"] == source)


def test_a_unit_that_fires_exactly_on_the_attribute_is_found_where_it_sits():
    code, labels = planted()
    unit = (1 * 3 + 2) * 8 + 5  # channel 5 at cell (1, 2)
    code[:, unit] = labels[:, 0] * (1.0 + np.random.default_rng(2).random(len(code)))
    # A unit silent exactly on the attribute's faces detects No_Beard by not firing.
    code[:, 3] = ~labels[:, 1] * 2.0
    result = run_dissect(code, labels)
    eyeglasses = record(result, "Eyeglasses")
    for measure in ("auc", "balanced_accuracy"):
        found = eyeglasses[measure]
        assert (found["channel"], found["cell"], found["direction"]) == (5, [1, 2], "fires")
        assert found["half_a"] == 1.0 and found["half_b"] == 1.0
    no_beard = record(result, "No_Beard")["auc"]
    assert (no_beard["channel"], no_beard["cell"]) == (3, [0, 0])
    assert no_beard["direction"] == "silent" and no_beard["half_b"] == 1.0
    assert result["summary"]["1"]["auc"] == 1.0
    assert result["halves"] == [400, 400] and result["attributes"] == ["Eyeglasses",
                                                                       "No_Beard"]


def test_a_unit_that_fits_half_a_by_chance_is_scored_at_chance_on_half_b():
    code, labels = planted()
    a, b = dissection.halves(len(code))
    lucky = (0 * 3 + 1) * 8 + 2
    code[:, lucky] = 0.0
    code[a, lucky] = labels[a, 0] * 3.0  # the attribute on half A, noise on half B
    code[b, lucky] = (np.random.default_rng(3).random(len(b)) < 0.05) * 3.0
    found = record(run_dissect(code, labels), "Eyeglasses")["auc"]
    assert (found["channel"], found["cell"]) == (2, [0, 1]) and found["half_a"] == 1.0
    assert abs(found["half_b"] - 0.5) < 0.1


def test_the_best_of_many_noise_units_is_not_rewarded_on_half_b():
    rng = np.random.default_rng(4)
    scores = rng.normal(size=(120, 3000))
    labels = rng.random((120, 1)) < 0.5
    unit, _, on_a, on_b = dissection.detectors(scores, labels, dissection.halves(120))["auc"]
    assert on_a[0] > 0.7  # picked from thousands, the best looks good on A
    assert abs(on_b[0] - 0.5) < 0.15


def test_a_pca_component_whose_low_values_mark_the_attribute_is_found_by_its_sign():
    rng = np.random.default_rng(7)
    pattern = rng.normal(size=48)
    pattern /= np.linalg.norm(pattern)
    code, labels = planted(800)
    # The faces vary along one pattern; Eyeglasses faces lie far out on its negative side.
    weight = rng.normal(size=len(code)) - 6.0 * labels[:, 0]
    faces = (np.outer(weight, pattern) + 1e-3 * rng.normal(size=(len(code), 48)))
    train = np.outer(rng.normal(size=200), pattern) + 1e-3 * rng.normal(size=(200, 48))
    result = dissection.dissect(Code(SHAPE), code, faces.reshape(-1, 4, 4, 3),
                                train.reshape(-1, 4, 4, 3), labels,
                                ("Eyeglasses", "No_Beard"), wanted=("Eyeglasses",))
    found = record(result, "Eyeglasses", "pca")
    _, directions = pixel_pca.pixel_pca(train.reshape(-1, 4, 4, 3), 3)
    orientation = int(np.sign(directions[0] @ pattern))
    assert found["balanced_accuracy"]["component"] == 0
    assert found["balanced_accuracy"]["sign"] == -orientation
    assert found["balanced_accuracy"]["direction"] == "fires"
    assert found["balanced_accuracy"]["half_b"] > 0.95
    # For the AUC the sign is the direction's business: the component enters once.
    assert found["auc"]["component"] == 0 and found["auc"]["sign"] == 1
    assert found["auc"]["direction"] == ("fires" if orientation < 0 else "silent")
    assert found["auc"]["half_b"] > 0.99
    assert set(result["summary"]) == {"1", "pca"}


def test_attributes_the_file_or_a_half_lacks_are_skipped_with_the_reason():
    code, labels = planted(200)
    labels[:, 0] = False  # no face wears glasses
    names = ("Eyeglasses", "No_Beard")
    result = run_dissect(code, labels, names=names)
    assert result["attributes"] == ["No_Beard"]
    assert "0 of 100 faces in half A" in result["skipped"]["Eyeglasses"]
    columns, skipped = dissection.select_attributes(
        names, labels, dissection.halves(200), wanted=("Smiling", "No_Beard"))
    assert columns == [1] and skipped == {"Smiling": "not in the attribute file"}
    with pytest.raises(UserError, match="none of Smiling"):
        dissection.select_attributes(names, labels, dissection.halves(200), ("Smiling",))


# pixel PCA


def test_pixel_pca_finds_the_leading_directions_of_the_training_images():
    rng = np.random.default_rng(5)
    patterns = np.linalg.qr(rng.normal(size=(192, 3)))[0].T  # 3 orthonormal images
    weights = rng.normal(size=(300, 3)) * [5.0, 3.0, 2.0]
    images = (0.2 + weights @ patterns + 0.01 * rng.normal(size=(300, 192)))
    mean, directions = pixel_pca.pixel_pca(images.reshape(300, 8, 8, 3), 3)
    assert directions.shape == (3, 192)
    np.testing.assert_allclose(mean, images.mean(0), atol=1e-5)
    # The leading right singular vectors of the centred images, up to sign...
    exact = np.linalg.svd(images - images.mean(0), full_matrices=False)[2][:3]
    np.testing.assert_allclose(np.abs(np.sum(directions * exact, 1)), 1.0, atol=1e-4)
    # ...which span the planted patterns.
    np.testing.assert_allclose(np.linalg.svd(directions @ patterns.T)[1], 1.0, atol=1e-3)
    # The coefficients rebuild each image up to the noise the directions leave out.
    coefficients = pixel_pca.pca_coefficients(images, mean, directions)
    np.testing.assert_allclose(mean + coefficients @ directions, images, atol=0.06)


def test_pixel_pca_keeps_at_most_as_many_directions_as_images():
    images = np.random.default_rng(6).normal(size=(5, 4, 4, 3))
    _, directions = pixel_pca.pixel_pca(images, 100)
    assert directions.shape == (5, 48)


# the dashboard's labels


def test_unit_labels_name_the_cell_the_attribute_and_the_held_out_auc():
    result = {"detectors": [
        {"attribute": "Eyeglasses", "source": "2", "auc": {
            "channel": 46, "cell": [1, 2], "direction": "fires", "half_b": 0.9137}},
        {"attribute": "No_Beard", "source": "2", "auc": {
            "channel": 46, "cell": [3, 0], "direction": "silent", "half_b": 0.7}},
        {"attribute": "Smiling", "source": "pca", "auc": {
            "component": 0, "sign": 1, "direction": "fires", "half_b": 0.8}}]}
    assert dissection.unit_labels(result) == {(2, 46): [
        "unit 46 @ (1, 2): Eyeglasses, AUC 0.91",
        "unit 46 @ (3, 0): silent for No_Beard, AUC 0.70"]}


# evaluate --attributes and explain, for real


NAMES = ("Eyeglasses", "Smiling", "Bald", "Attractive")


def write_faces(folder, count):
    """count 32x32 PNGs, "{i:06d}.png": a dark image with a bright square in the
    quadrant i % 4; and CelebA-format labels: Eyeglasses = the square is top left,
    Smiling = bottom right, Bald on every third image, Attractive on every other."""
    os.makedirs(folder)
    rng = np.random.default_rng(0)
    lines = [str(count), " ".join(NAMES)]
    for i in range(count):
        image = np.full((32, 32, 3), 30, np.uint8)
        y, x = 16 * (i % 4 // 2), 16 * (i % 2)
        image[y + 4:y + 12, x + 4:x + 12] = rng.integers(150, 255)
        tf.io.write_file(os.path.join(folder, f"{i:06d}.png"), tf.io.encode_png(image))
        flags = (i % 4 == 0, i % 4 == 3, i % 3 == 0, i % 2 == 0)
        lines.append(f"{i:06d}.png " + " ".join("1" if f else "-1" for f in flags))
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def face_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("dissect")
    (root / "attr.txt").write_text(write_faces(str(root / "faces"), 48))
    workdir = train_ok(root / "run", *TINY_TRAIN_FLAGS, "--dataset=folder",
                       f"--data_dir={root / 'faces'}", "--num_images=32", "--heldout=16",
                       "--train_steps=2", timeout=400)
    return workdir, str(root / "attr.txt")


def evaluate(workdir, *flags):
    return run_command("-m", "sparse_gen_tf.commands.evaluate", f"--workdir={workdir}",
                       "--num_heldout=16", "--nobaseline", "--noserved",
                       *FAST_INFERENCE_FLAGS, *flags, timeout=400)


@pytest.fixture(scope="module")
def evaluated(face_run):
    """face_run's workdir after `evaluate --attributes`, and what evaluate printed."""
    workdir, attributes = face_run
    result = evaluate(workdir, f"--attributes={attributes}")
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir, result


@pytest.mark.slow
def test_evaluate_with_attributes_reports_each_layer_and_pca(evaluated):
    workdir, result = evaluated
    for name in ("layer 1", "layer 2", "pixel PCA of the code's size"):
        assert f"| Attribute AUC, best unit of {name} (held-out half" in result.stdout
        assert f"| Attribute balanced accuracy, best unit of {name}" in result.stdout
    with open(os.path.join(workdir, "evaluation.json")) as f:
        scores = json.load(f)
    found = scores["dissection"]
    # Attractive is not localised; Bald is (but on every third face only).
    assert found["attributes"] == ["Eyeglasses", "Smiling", "Bald"]
    assert found["num_faces"] == 16 and found["halves"] == [8, 8]
    assert found["checkpoint"].startswith("ckpt-")
    assert len(found["detectors"]) == 3 * 3
    for source in ("1", "2", "pca"):
        detail = [r for r in found["detectors"] if r["source"] == source]
        mean_auc = np.mean([r["auc"]["half_b"] for r in detail])
        assert scores[f"attribute_auc_{source}"] == pytest.approx(mean_auc)
        assert 0 <= scores[f"attribute_balanced_accuracy_{source}"] <= 1
    # Layer 2 is the 4x4x8 bottom map: each chosen unit sits in it.
    for r in found["detectors"]:
        if r["source"] == "2":
            assert 0 <= r["auc"]["channel"] < 8 and all(0 <= v < 4 for v in r["auc"]["cell"])


@pytest.mark.slow
def test_explain_labels_the_units_that_detect_attributes(evaluated):
    workdir, _ = evaluated
    with open(os.path.join(workdir, "evaluation.json")) as f:
        found = json.load(f)["dissection"]
    result = run_command("-m", "sparse_gen_tf.commands.explain", f"--workdir={workdir}",
                         "--num_samples=1", "--num_images=1", *FAST_INFERENCE_FLAGS,
                         timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(os.path.join(workdir, "explain", "index.html")) as f:
        page = f.read()
    labels = dissection.unit_labels(found)
    # Three attributes, each with a continuous detector in each of the two layers.
    assert sum(map(len, labels.values())) == 6
    assert page.count("Attribute detectors (evaluate --attributes") == 2
    for layer, channel in labels:
        panel = page.split(f'id="unit-{layer}-{channel}"')[1].split("</section>")[0]
        assert all(label in panel for label in labels[layer, channel])


@pytest.mark.slow
def test_a_missing_attribute_file_is_a_flag_error(tmp_path):
    for path in (tmp_path / "no_such_file.txt", tmp_path):
        assert_flag_error(evaluate(tmp_path / "run", f"--attributes={path}"),
                          "--attributes must name an existing file")


@pytest.mark.slow
def test_an_image_without_a_label_is_a_one_line_error(face_run, tmp_path):
    workdir, attributes = face_run
    with open(attributes) as f:
        lines = f.read().splitlines()
    short = tmp_path / "attr.txt"
    short.write_text("\n".join([str(len(lines) - 3)] + lines[1:-1]) + "\n")
    result = evaluate(workdir, f"--attributes={short}")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("evaluate: error: image") and "000047.png" in last
