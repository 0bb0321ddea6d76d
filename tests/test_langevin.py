"""Langevin inference (Eq. 10-11) on a fixed generator."""

import numpy as np
import pytest
import tensorflow as tf

from conftest import tiny_generator
from sparse_gen_tf import Generator, langevin, log_joint

CONFIG = tiny_generator(image_size=16, latent_dim=8, channels=(16, 8), topk=(16, 32))


def energy(generator, z, images, sigma):
    log_likelihood, log_prior = log_joint(generator, z, images, sigma)
    return -(log_likelihood + log_prior).numpy()


def sharp_generator():
    """A random generator whose image depends strongly on z, so the posterior is peaked."""
    generator = Generator(CONFIG)
    for weight in generator.trainable_weights:
        weight.assign(weight * 3.0)
    return generator


def test_langevin_lowers_the_energy_on_a_fixed_generator():
    generator = sharp_generator()
    images = generator(tf.random.stateless_normal([8, 8], [1, 1]))
    z0 = tf.random.stateless_normal([8, 8], [2, 2])
    z = langevin(generator, z0, images, tf.constant([3, 3]), steps=60, step_size=0.1,
                 sigma=0.3)
    before, after = energy(generator, z0, images, 0.3), energy(generator, z, images, 0.3)
    assert (after < before).all(), (before, after)
    assert after.mean() < 0.5 * before.mean(), (before, after)


def test_langevin_without_noise_is_gradient_ascent_on_log_joint():
    generator = Generator(CONFIG)
    images = tf.zeros([2, 16, 16, 3])
    z0 = tf.random.stateless_normal([2, 8], [4, 4])
    z1 = langevin(generator, z0, images, tf.constant([0, 0]), steps=1, step_size=0.1,
                  sigma=0.5, noise=False)
    with tf.GradientTape() as tape:
        tape.watch(z0)
        log_p = tf.reduce_sum(tf.add_n(log_joint(generator, z0, images, 0.5)))
    expected = z0 + 0.5 * 0.1 ** 2 * tape.gradient(log_p, z0)
    np.testing.assert_allclose(z1.numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("config", [
    CONFIG,  # bottom kernel == stride: the loop works on space_to_depth'd images
    tiny_generator(image_size=16, latent_dim=8, channels=(16, 8), topk=(16, 32),
                   kernel_sizes=(4, 6))])  # k > s: the plain path
@pytest.mark.parametrize("masked", [False, True])
def test_the_loops_squared_error_is_log_joints(config, masked):
    generator = Generator(config)
    assert generator.blocked_output == (config.kernel_sizes[-1] == config.strides[-1])
    z = tf.random.stateless_normal([3, 8], [1, 2])
    images = tf.random.stateless_uniform([3, 16, 16, 3], [3, 4], minval=-1, maxval=1)
    observed = None
    if masked:
        observed = tf.cast(tf.random.stateless_uniform([3, 16, 16, 1], [5, 6]) > 0.5,
                           tf.float32)
    loop = generator.squared_error_fn(images, observed)(z)
    log_likelihood, _ = log_joint(generator, z, images, sigma=0.5, observed=observed)
    np.testing.assert_allclose(loop.numpy(), -2 * 0.25 * log_likelihood.numpy(), rtol=1e-5)


def test_zero_langevin_steps_return_the_start_under_xla():
    generator = Generator(CONFIG)
    z0 = tf.random.stateless_normal([2, 8], [4, 4])
    run = tf.function(lambda z: langevin(generator, z, tf.zeros([2, 16, 16, 3]), [1, 2],
                                         steps=0, step_size=0.1, sigma=0.3),
                      jit_compile=True)
    np.testing.assert_array_equal(run(z0).numpy(), z0.numpy())


def test_langevin_noise_is_reproducible_from_the_seed():
    generator = Generator(CONFIG)
    images = tf.zeros([2, 16, 16, 3])
    z0 = tf.zeros([2, 8])
    run = lambda seed: langevin(generator, z0, images, tf.constant(seed), steps=3,
                                step_size=0.1, sigma=0.3).numpy()
    np.testing.assert_array_equal(run([5, 6]), run([5, 6]))
    assert not np.allclose(run([5, 6]), run([5, 7]))


def test_langevin_compiles_with_xla_and_matches_eager():
    # XLA's stateless RNG draws other numbers than the eager kernel, so compare the drift.
    generator = sharp_generator()
    images = generator(tf.random.stateless_normal([4, 8], [8, 8]))
    z0 = tf.zeros([4, 8])
    seed = tf.constant([1, 2])
    kwargs = dict(steps=5, step_size=0.1, sigma=0.3, noise=False)
    eager = langevin(generator, z0, images, seed, **kwargs)
    compiled = tf.function(lambda z, y: langevin(generator, z, y, seed, **kwargs),
                           jit_compile=True)(z0, images)
    np.testing.assert_allclose(compiled.numpy(), eager.numpy(), atol=1e-4)


def test_log_joint_ignores_unobserved_pixels():
    generator = Generator(CONFIG)
    z = tf.random.stateless_normal([1, 8], [9, 9])
    images = np.asarray(generator(z)).copy()
    observed = np.ones([1, 16, 16, 1], "float32")
    observed[:, :8] = 0
    changed = images.copy()
    changed[:, :8] = 1.0
    a = log_joint(generator, z, images, 0.3, observed)[0].numpy()
    b = log_joint(generator, z, changed, 0.3, observed)[0].numpy()
    np.testing.assert_allclose(a, b)
    np.testing.assert_allclose(a, 0.0, atol=1e-6)
