"""The grammar-validity score of samples: the data scores 1, and images that break the
grammar in each way it can be broken score low."""

import numpy as np
import pytest

from sparse_gen_tf.explanation import parts_scores
from sparse_gen_tf.data import parts

N = 128


@pytest.fixture(scope="module")
def data():
    images, truth = parts.generate(N, seed=3)
    return images / 127.5 - 1.0, truth


def cells_of(images):
    """[N, 32, 32, 3] -> [N, 16, 8, 8, 3], the cells in row-major order."""
    return images.reshape(N, 4, 8, 4, 8, 3).transpose(0, 1, 3, 2, 4, 5).reshape(N, 16, 8, 8, 3)


def image_of(cells):
    return cells.reshape(N, 4, 4, 8, 8, 3).transpose(0, 1, 3, 2, 4, 5).reshape(N, 32, 32, 3)


def test_the_training_images_are_legal_and_every_cell_is_clean(data):
    images, truth = data
    assert parts_scores.grammar_validity(images, truth) == (1.0, 1.0)
    part, intensity, _ = parts_scores.cell_fits(images, truth.parts)
    np.testing.assert_array_equal(part, truth.part_labels)
    np.testing.assert_allclose(intensity, truth.coefficients, atol=0.01)


def test_faded_parts_are_not_clean(data):
    images, truth = data
    faded = -1.0 + 0.3 * (images + 1.0)  # every part at a third of its contrast or less
    assert parts_scores.grammar_validity(faded, truth) == (0.0, 0.0)


def test_shuffled_cells_are_clean_but_not_composites(data):
    images, truth = data
    rng = np.random.RandomState(0)
    order = np.stack([rng.permutation(16) for _ in range(N)])
    shuffled = image_of(np.take_along_axis(cells_of(images),
                                           order[:, :, None, None, None], 1))
    validity, clean = parts_scores.grammar_validity(shuffled, truth)
    assert clean == 1.0 and validity < 0.05


def test_blended_images_are_mostly_not_clean(data):
    images, truth = data
    blended = 0.5 * (images + images[np.random.RandomState(1).permutation(N)])
    validity, clean = parts_scores.grammar_validity(blended, truth)
    # Only cells where both images hold the same part stay clean (one composite in 8).
    assert validity < 0.25 and clean < 0.35


def test_an_empty_cell_is_clean_but_breaks_its_quadrant(data):
    images, truth = data
    cells = cells_of(images)
    cells[:, 0] = -1.0  # the top-left cell of every image: bare background
    validity, clean = parts_scores.grammar_validity(image_of(cells), truth)
    assert clean == 1.0 and validity == 0.75
    part, _, _ = parts_scores.cell_fits(image_of(cells), truth.parts)
    assert (part[:, 0, 0] == -1).all()
