"""`gradient_path.choose` picks one Langevin gradient path per device, and says why.

The sparse kernels on a CPU where they build and every layer keeps at most
SPARSE_KERNELS_MAX_DENSITY of its units; the dense step on a GPU or TPU, without XLA (by
default), for denser maps, for the cooperative step and where the kernels cannot run.
"""

import os

import pytest
import tensorflow as tf

from sparse_gen_tf import AlternatingBackprop, Generator, GeneratorConfig
from sparse_gen_tf.learning import gradient_path
from sparse_gen_tf.model import sparse_kernels


def paper_generator(topk):
    return Generator(GeneratorConfig(image_size=64, latent_dim=8, channels=(256, 128),
                                     topk=topk, kernel_sizes=(4, 16), strides=(2, 16)))


def kernels_build():
    return sparse_kernels.unavailable_reason() is None or bool(os.environ.get("CI"))


@pytest.mark.parametrize("topk,jit_compile,kernels,expected", [
    ((64, 128), True, None, "kernels"),   # the paper's 6.25%
    ((10, 20), True, None, "kernels"),    # 1%
    ((128, 256), True, None, "dense"),    # 12.5%: above SPARSE_KERNELS_MAX_DENSITY
    ((64, 128), True, False, "dense"),    # kernels off
    ((10, 20), False, None, "dense"),     # no XLA: by default the kernels need it
    ((10, 20), False, True, "kernels"),   # asked for: wherever they run
])
@pytest.mark.parametrize("gpu", [False, True])
def test_compile_picks_one_path_per_device(host_gpus, topk, jit_compile, kernels,
                                           expected, gpu):
    host_gpus(gpu)
    model = AlternatingBackprop(paper_generator(topk), 4, sparse_kernels=kernels)
    model.compile(optimizer="adam", jit_compile=jit_compile)
    if expected == "kernels" and not kernels_build():
        expected = "dense"  # no C++ compiler here; CI installs one
    expected = "dense" if gpu else expected
    assert ("kernels" if model.uses_sparse_kernels else "dense") == expected
    assert model.gradient_path.reason
    # The kernels' step cannot be one XLA computation; the dense one keeps what was asked.
    assert model.jit_compile == (False if expected == "kernels" else jit_compile)
    assert [t.bisection for t in model.generator.topks] == [
        not gpu and (jit_compile or expected == "kernels")] * 2


def test_the_reasons_name_what_decided(host_gpus):
    generator = paper_generator((64, 128))
    host_gpus(True)
    assert "GPU" in gradient_path.choose(generator, xla=True, sparse_kernels=True).reason
    host_gpus(False)
    dense = paper_generator((256, 512))
    assert "25.0%" in gradient_path.choose(dense, xla=True).reason
    cooperative = gradient_path.choose(generator, xla=True, dense_only="the cooperative step")
    assert not cooperative.sparse_kernels and cooperative.bisection
    assert "the cooperative step" in cooperative.reason
    assert "off" in gradient_path.choose(generator, xla=True, sparse_kernels=False).reason


def test_a_tpu_takes_the_dense_path_with_top_k(monkeypatch):
    real = tf.config.list_logical_devices

    def devices(device_type=None):
        if device_type == "TPU":
            return [tf.config.LogicalDevice("/device:TPU:0", "TPU")]
        return real(device_type)

    monkeypatch.setattr(tf.config, "list_logical_devices", devices)
    path = gradient_path.choose(paper_generator((64, 128)), xla=True, sparse_kernels=True)
    assert not path.sparse_kernels and not path.bisection and "TPU" in path.reason


def test_plain_restores_the_chosen_thresholds():
    generator = paper_generator((64, 128))
    gradient_path.GradientPath(False, True, "test").apply(generator)
    with gradient_path.plain(generator):
        assert not any(t.bisection for t in generator.topks)
    assert all(t.bisection for t in generator.topks)
