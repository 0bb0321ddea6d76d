"""The descriptor f(Y; φ) of Eq. (13), its energy and its Langevin dynamics."""

import numpy as np
import pytest
import tensorflow as tf

from sparse_gen_tf.model.descriptor import (Descriptor, DescriptorConfig, descriptor_langevin,
                                      energy)

CONFIG = DescriptorConfig(channels=(4, 8, 8), kernel_sizes=(5, 3, 3), strides=(2, 2, 1))


def make_descriptor():
    descriptor = Descriptor(CONFIG, image_size=16)
    # A fixed model: seeded weights, so the tests do not depend on Keras' global seed.
    for i, weight in enumerate(descriptor.trainable_weights):
        weight.assign(tf.random.stateless_normal(weight.shape, [7, i], stddev=0.2))
    return descriptor


def images(seed, scale=1.0):
    return scale * tf.random.stateless_uniform([6, 16, 16, 3], [seed, 0], -1, 1)


def test_descriptor_gives_one_score_per_image_and_has_the_coopnets_shape():
    descriptor = make_descriptor()
    assert descriptor(images(0)).shape == (6,)
    kernels = [conv.kernel.shape for conv in descriptor.convs]
    assert kernels == [(5, 5, 3, 4), (3, 3, 4, 8), (3, 3, 8, 8)]
    # 16 -> 8 -> 4 -> 4 pixels, 8 channels, into one dense unit.
    assert descriptor.score.kernel.shape == (4 * 4 * 8, 1)
    # The default is train.py's: the CoopNets descriptor (64, 128, 256) at a quarter width.
    default = DescriptorConfig()
    assert (default.channels, default.kernel_sizes, default.strides, default.leaky_slope) == \
        ((16, 32, 64), (5, 3, 3), (2, 2, 1), 0.2)


def test_one_noise_free_step_follows_the_langevin_update():
    descriptor = make_descriptor()
    y = images(1)
    with tf.GradientTape() as tape:
        tape.watch(y)
        f = tf.reduce_sum(descriptor(y))
    delta, s = 0.05, 0.5
    expected = y + 0.5 * delta ** 2 * (tape.gradient(f, y) - y / s ** 2)
    revised = descriptor_langevin(descriptor, y, [0, 0], steps=1, step_size=delta,
                                  reference=s, noise=False)
    np.testing.assert_allclose(revised.numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("noise", [False, True])
def test_langevin_lowers_the_energy_at_the_coopnets_settings(noise):
    descriptor = make_descriptor()
    y = images(2, scale=0.5)
    revised = descriptor_langevin(descriptor, y, [3, 4], steps=15, step_size=0.002,
                                  reference=0.016, noise=noise)
    before = energy(descriptor, y, 0.016).numpy()
    after = energy(descriptor, revised, 0.016).numpy()
    assert (after < before).all(), (before, after)
    # 15 steps of δ²/2s² = 0.78% shrinkage each leave about 89% of the norm.
    ratio = tf.norm(revised) / tf.norm(y)
    assert 0.85 < float(ratio) < 0.93


def test_langevin_climbs_f_when_the_reference_is_flat():
    # With a huge s the energy is -f alone: the dynamics must raise f itself.
    descriptor = make_descriptor()
    y = images(5)
    revised = descriptor_langevin(descriptor, y, [0, 1], steps=10, step_size=0.1,
                                  reference=1e4, noise=False)
    assert (descriptor(revised).numpy() > descriptor(y).numpy()).all()


def test_noise_is_reproducible_from_the_seed_and_xla_compiles_the_chain():
    descriptor = make_descriptor()
    y = images(6)
    kwargs = dict(steps=3, step_size=0.01, reference=0.5)
    a = descriptor_langevin(descriptor, y, [1, 2], **kwargs)
    b = descriptor_langevin(descriptor, y, [1, 2], **kwargs)
    c = descriptor_langevin(descriptor, y, [1, 3], **kwargs)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert np.abs(a.numpy() - c.numpy()).max() > 1e-3

    def compiled(noise):
        return tf.function(lambda y: descriptor_langevin(descriptor, y, [1, 2], noise=noise,
                                                         **kwargs), jit_compile=True)(y)
    # XLA draws other normals than the eager kernel from the same seed, but the same ones
    # every time; without noise both compute the same chain.
    np.testing.assert_array_equal(compiled(True).numpy(), compiled(True).numpy())
    eager = descriptor_langevin(descriptor, y, [1, 2], noise=False, **kwargs)
    np.testing.assert_allclose(compiled(False).numpy(), eager.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kwargs,message", [
    (dict(channels=(8, 8), kernel_sizes=(3,), strides=(1, 1)), "need 2 entries each"),
    (dict(channels=(8,), kernel_sizes=(0,), strides=(1,)), "must all be positive"),
    (dict(channels=()), "at least one convolution"),
    (dict(leaky_slope=1.5), "slope in [0, 1)"),
])
def test_inconsistent_architectures_are_refused_with_a_reason(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace(")", r"\)")):
        DescriptorConfig(**kwargs)
