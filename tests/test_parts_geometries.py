"""The parts grammar at each of its geometries (data/parts.py GEOMETRIES, --parts_geometry)."""

import numpy as np
import pytest

from sparse_gen_tf.data import parts, pipeline
from sparse_gen_tf.errors import DataError
from sparse_gen_tf.model.generator import GeneratorConfig
from sparse_gen_tf.training import config as config_lib


def _generator_config(flags):
    """GeneratorConfig of a geometry's --image_size ... --topk flags."""
    values = dict(flag[2:].split("=", 1) for flag in flags)
    as_tuple = lambda text: tuple(int(v) for v in text.split(","))  # noqa: E731
    return GeneratorConfig(
        image_size=int(values["image_size"]), latent_dim=int(values["latent_dim"]),
        channels=as_tuple(values["channels"]), topk=as_tuple(values["topk"]),
        kernel_sizes=as_tuple(values["kernel_sizes"]), strides=as_tuple(values["strides"]))


@pytest.mark.parametrize("name", sorted(parts.GEOMETRIES))
def test_every_image_is_a_derivation_of_its_geometrys_grammar(name):
    geometry = parts.GEOMETRIES[name]
    images, truth = parts.generate_geometry(name, 60, seed=2)
    size, cell = geometry.image_size, geometry.image_size // parts.GRID
    assert images.shape == (60, size, size, 3) and images.dtype == np.uint8
    assert truth.parts.shape == (geometry.num_parts, cell, cell, 3)
    assert truth.composites.shape == (4, geometry.num_composites, 2, 2)
    # Each quadrant holds the composite its label names, cell for cell.
    for q in range(4):
        row, col = divmod(q, 2)
        block = truth.part_labels[:, 2 * row:2 * row + 2, 2 * col:2 * col + 2]
        np.testing.assert_array_equal(
            block, truth.composites[q][truth.composite_labels[:, row, col]])
        # Within a quadrant the composites differ in every cell.
        table = truth.composites[q].reshape(geometry.num_composites, 4)
        for c in range(4):
            assert len(set(table[:, c])) == geometry.num_composites
    # Every part of the dictionary is used by some composite; none outside it.
    assert set(truth.composites.ravel()) == set(range(geometry.num_parts))
    low, high = parts.COEFFICIENT_RANGE
    assert truth.coefficients.min() >= low and truth.coefficients.max() < high
    # The pixels are the rendered parse, rounded to uint8.
    drawn = parts.render(truth.part_labels, truth.coefficients, truth.parts)
    expected = np.clip(np.round((drawn + 1.0) * 127.5), 0, 255)
    assert np.abs(images.astype(np.float64) - expected).max() <= 1.0


@pytest.mark.parametrize("name", sorted(parts.GEOMETRIES))
def test_a_geometrys_generator_flags_fit_its_images(name):
    geometry = parts.GEOMETRIES[name]
    config = _generator_config(geometry.model_flags)
    assert config.image_size == geometry.image_size
    # The top map is 2x2, one AND node per quadrant; the bottom map is the 4x4 grid of
    # cells, and its kernel paints exactly one cell.
    assert config.top_size == 2
    assert config.feature_map_shapes()[-1][:2] == (parts.GRID, parts.GRID)
    assert config.kernel_sizes[-1] == config.strides[-1] == geometry.image_size // parts.GRID


@pytest.mark.parametrize("name", sorted(parts.GEOMETRIES))
def test_a_geometrys_dense_flags_keep_every_unit(name):
    flags = parts.GEOMETRIES[name].flags(name, dense=True)
    assert flags[0] == f"--parts_geometry={name}"
    config = _generator_config(flags[1:])
    assert config.topk == tuple(h * w * c for h, w, c in config.feature_map_shapes())
    assert config.topk != _generator_config(parts.GEOMETRIES[name].model_flags).topk


def test_only_overlap_has_top_kernels_that_reach_every_quadrant():
    for name, geometry in parts.GEOMETRIES.items():
        config = _generator_config(geometry.model_flags)
        k, s = config.kernel_sizes[0], config.strides[0]
        crop = (k - s) // 2  # 'same' padding of a transposed conv
        # Top unit 0 paints bottom rows -crop .. k - 1 - crop; quadrant 1 starts at row 2
        # and its far edge is row 3.
        reaches_far_edge = k - 1 - crop >= parts.GRID - 1
        assert reaches_far_edge == (name == "overlap"), name


def test_the_large_geometry_differs_from_the_default_in_size_parts_and_composites():
    _, default = parts.generate_geometry("default", 0)
    _, large = parts.generate_geometry("large", 0)
    assert default.parts.shape[1] == 8 and large.parts.shape[1] == 16
    assert len(large.parts) == 12 < len(default.parts) == 16
    assert large.composites.shape[1] == 6 < default.composites.shape[1] == 8
    # overlap draws the default's images: only the generator differs.
    images, _ = parts.generate_geometry("default", 5)
    overlap, _ = parts.generate_geometry("overlap", 5)
    np.testing.assert_array_equal(images, overlap)


def test_the_default_geometry_is_generate_at_any_size():
    for size in (32, 48):
        images, truth = parts.generate_geometry("default", 4, image_size=size, seed=1)
        same, same_truth = parts.generate(4, image_size=size, seed=1)
        np.testing.assert_array_equal(images, same)
        np.testing.assert_array_equal(truth.composites, same_truth.composites)


def test_pipeline_and_config_select_the_geometry():
    config = config_lib.from_flat({"parts_geometry": "large", "image_size": 64,
                                   "latent_dim": 100, "channels": [256, 64],
                                   "kernel_sizes": [4, 16], "strides": [2, 16],
                                   "num_images": 16})
    data = pipeline.load_for(config)
    assert data.images.shape == (16, 64, 64, 3)
    assert data.ground_truth.composites.shape == (4, 6, 2, 2)
    heldout, truth = pipeline.heldout_images(config, 3)
    assert heldout.shape == (3, 64, 64, 3) and len(truth.parts) == 12
    assert not np.array_equal(heldout, data.images[:3])


def test_a_geometry_at_the_wrong_size_or_an_unknown_one_is_a_one_line_error():
    with pytest.raises(DataError, match="--parts_geometry=large draws 64x64"):
        pipeline.load("parts", image_size=32, num_images=4, parts_geometry="large")
    with pytest.raises(ValueError, match="unknown parts geometry 'huge'"):
        parts.generate_geometry("huge", 4)
