"""Specification of the embedded And-Or grammar dataset (sparse_gen_tf.data.parts)."""


import numpy as np
import pytest

from sparse_gen_tf.data import parts


def _foreground(part_array):
    """[P, cell, cell, 3] parts in [-1, 1] -> [P, cell*cell*3], background subtracted."""
    return (part_array + 1.0).reshape(len(part_array), -1)


def test_generate_returns_documented_shapes_and_dtypes():
    images, truth = parts.generate(5, image_size=64, num_parts=12, num_composites=6)
    assert images.shape == (5, 64, 64, 3) and images.dtype == np.uint8
    assert truth.parts.shape == (12, 16, 16, 3) and truth.parts.dtype == np.float32
    assert truth.part_labels.shape == (5, 4, 4) and truth.part_labels.dtype == np.int32
    assert truth.composite_labels.shape == (5, 2, 2)
    assert truth.composite_labels.dtype == np.int32
    assert truth.coefficients.shape == (5, 4, 4)
    assert truth.coefficients.dtype == np.float32
    assert truth.composites.shape == (4, 6, 2, 2) and truth.composites.dtype == np.int32
    assert truth.parts.min() >= -1.0 and truth.parts.max() <= 1.0


def test_same_arguments_give_identical_output():
    images_a, truth_a = parts.generate(20, seed=3)
    images_b, truth_b = parts.generate(20, seed=3)
    np.testing.assert_array_equal(images_a, images_b)
    np.testing.assert_array_equal(truth_a.part_labels, truth_b.part_labels)
    np.testing.assert_array_equal(truth_a.coefficients, truth_b.coefficients)


def test_first_images_do_not_depend_on_num_images():
    images_few, truth_few = parts.generate(7, seed=1)
    images_many, truth_many = parts.generate(50, seed=1)
    np.testing.assert_array_equal(images_many[:7], images_few)
    np.testing.assert_array_equal(truth_many.part_labels[:7], truth_few.part_labels)
    np.testing.assert_array_equal(truth_many.coefficients[:7], truth_few.coefficients)
    np.testing.assert_array_equal(truth_many.composites, truth_few.composites)


def test_image_seed_changes_images_but_not_grammar():
    images, truth = parts.generate(10, seed=0)
    held_out, held_out_truth = parts.generate(10, seed=0, image_seed=1)
    assert not np.array_equal(images, held_out)
    assert not np.array_equal(truth.part_labels, held_out_truth.part_labels)
    np.testing.assert_array_equal(truth.parts, held_out_truth.parts)
    np.testing.assert_array_equal(truth.composites, held_out_truth.composites)
    # image_seed=None means image_seed=seed.
    explicit, _ = parts.generate(10, seed=0, image_seed=0)
    np.testing.assert_array_equal(images, explicit)


def test_seed_changes_composite_tables():
    _, truth_a = parts.generate(0, seed=0)
    _, truth_b = parts.generate(0, seed=1)
    assert not np.array_equal(truth_a.composites, truth_b.composites)


def test_each_cell_is_background_plus_coefficient_times_part():
    images, truth = parts.generate(6, seed=2)
    rendered = parts.render(truth.part_labels, truth.coefficients, truth.parts)
    assert rendered.shape == (6, 32, 32, 3) and rendered.dtype == np.float32
    cell = 8
    for n in range(6):
        for row in range(4):
            for col in range(4):
                block = rendered[n, row * cell:(row + 1) * cell, col * cell:(col + 1) * cell]
                part = truth.parts[truth.part_labels[n, row, col]]
                expected = -1.0 + truth.coefficients[n, row, col] * (part + 1.0)
                np.testing.assert_allclose(block, expected, atol=1e-6)
    # The stored uint8 images are the quantized rendering.
    np.testing.assert_allclose(images / 127.5 - 1.0, rendered, atol=0.5 / 127.5 + 1e-6)


def test_render_with_unit_coefficient_pastes_parts_and_zero_gives_background():
    _, truth = parts.generate(0, num_parts=16)
    labels = np.arange(16, dtype=np.int32).reshape(1, 4, 4)
    full = parts.render(labels, np.ones((1, 4, 4)), truth.parts)[0]
    np.testing.assert_array_equal(full[8:16, 16:24], truth.parts[6])  # cell (1, 2)
    empty = parts.render(labels, np.zeros((1, 4, 4)), truth.parts)
    np.testing.assert_array_equal(empty, -1.0)


def test_part_labels_follow_the_chosen_composites():
    _, truth = parts.generate(100, seed=4)
    for q_row in range(2):
        for q_col in range(2):
            chosen = truth.composite_labels[:, q_row, q_col]
            expected = truth.composites[2 * q_row + q_col][chosen]  # [N, 2, 2]
            cells = truth.part_labels[:, 2 * q_row:2 * q_row + 2, 2 * q_col:2 * q_col + 2]
            np.testing.assert_array_equal(cells, expected)


def test_every_composite_is_chosen_about_equally_often():
    _, truth = parts.generate(4000, num_composites=8)
    counts = np.bincount(truth.composite_labels.ravel(), minlength=8)
    assert counts.sum() == 16000
    np.testing.assert_allclose(counts / 2000, 1.0, atol=0.1)


def test_coefficients_lie_in_the_documented_range():
    _, truth = parts.generate(2000)
    assert truth.coefficients.min() >= 0.6 and truth.coefficients.max() <= 1.0
    # Uniform on [0.6, 1.0): both ends of the range are visited.
    assert truth.coefficients.min() < 0.61 and truth.coefficients.max() > 0.99


@pytest.mark.parametrize("num_parts,num_composites", [(16, 8), (16, 1), (4, 4), (10, 3)])
def test_composites_differ_in_every_cell_and_use_every_part(num_parts, num_composites):
    for seed in range(5):
        _, truth = parts.generate(0, seed=seed, num_parts=num_parts,
                                  num_composites=num_composites)
        table = truth.composites  # [4, num_composites, 2, 2]
        assert table.min() >= 0 and table.max() < num_parts
        np.testing.assert_array_equal(np.unique(table), np.arange(num_parts))
        for quadrant in range(4):
            for cell in table[quadrant].reshape(num_composites, 4).T:
                assert len(np.unique(cell)) == num_composites


@pytest.mark.parametrize("image_size", [32, 48, 64, 128])
def test_parts_are_pairwise_distinct(image_size):
    _, truth = parts.generate(0, image_size=image_size)
    vectors = _foreground(truth.parts)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    correlation = np.abs(vectors @ vectors.T)
    np.fill_diagonal(correlation, 0.0)
    # The module documents < 0.6; the evaluation only needs clearly below 0.9.
    assert correlation.max() < 0.6


@pytest.mark.parametrize("image_size", [32, 64])
def test_parts_are_one_colour_on_black_with_a_margin(image_size):
    _, truth = parts.generate(0, image_size=image_size)
    cell = image_size // 4
    margin = max(1, cell // 8)
    for part in truth.parts:
        inner = part[margin:cell - margin, margin:cell - margin]
        np.testing.assert_array_equal(part[:margin], -1.0)
        np.testing.assert_array_equal(part[:, -margin:], -1.0)
        foreground = (inner > -1.0).any(axis=-1)
        assert 0.1 < foreground.mean() < 0.95  # a shape, not a blank or a full square
        colours = np.unique(inner[foreground], axis=0)
        assert len(colours) == 1 and colours.max() == 1.0  # a single saturated colour


@pytest.mark.parametrize("kwargs", [
    dict(image_size=30),
    dict(image_size=16),
    dict(image_size=32.0),
    dict(num_parts=3),
    dict(num_parts=17),
    dict(num_composites=0),
    dict(num_parts=6, num_composites=7),
    dict(seed=-1),
    dict(image_seed=-2),
    dict(num_images=-1),
    dict(num_images=True),
])
def test_invalid_arguments_raise_value_error(kwargs):
    arguments = dict(num_images=2)
    arguments.update(kwargs)
    with pytest.raises(ValueError):
        parts.generate(**arguments)


def test_render_rejects_inconsistent_inputs():
    _, truth = parts.generate(0, num_parts=4, num_composites=4)
    labels = np.zeros((2, 4, 4), dtype=np.int32)
    coefficients = np.ones((2, 4, 4), dtype=np.float32)
    with pytest.raises(ValueError):
        parts.render(labels[:, :3], coefficients[:, :3], truth.parts)
    with pytest.raises(ValueError):
        parts.render(labels, coefficients[:1], truth.parts)
    with pytest.raises(ValueError):
        parts.render(labels + 4, coefficients, truth.parts)  # only parts 0..3 exist
    with pytest.raises(ValueError):
        parts.render(labels.astype(np.float32), coefficients, truth.parts)
    with pytest.raises(ValueError):
        parts.render(labels, coefficients, truth.parts[..., :2])
