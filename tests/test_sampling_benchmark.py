"""benchmarks/sampling.py's comparison of the priors on every parts geometry."""

import os

import pytest

from conftest import ROOT, load_benchmark, run_command
from sparse_gen_tf.data import parts
from sparse_gen_tf.model.generator import GeneratorConfig


@pytest.mark.parametrize("name", sorted(parts.GEOMETRIES))
def test_the_dense_model_of_a_geometry_keeps_every_unit(name):
    sampling = load_benchmark("sampling")
    flags = parts.GEOMETRIES[name].model_flags
    values = dict(flag[2:].split("=", 1) for flag in flags + (sampling.dense_topk(flags),))
    config = GeneratorConfig(**{key: (int(value) if key in ("image_size", "latent_dim")
                                      else tuple(int(v) for v in value.split(",")))
                                for key, value in values.items()})
    assert config.topk == tuple(h * w * c for h, w, c in config.feature_map_shapes())


def test_unknown_geometries_are_refused_in_one_line(tmp_path):
    result = run_command(os.path.join(ROOT, "benchmarks", "sampling.py"),
                         f"--geometry_dir={tmp_path}", "--geometries=default,huge")
    assert result.returncode != 0
    assert "unknown geometries huge; use some of default, large, overlap" in result.stderr
    assert "Traceback" not in result.stderr
    assert not os.listdir(tmp_path)  # nothing was trained
