"""Inference of z for new images: restarts, bank starts, annealing, occlusion."""

import keras
import numpy as np
import tensorflow as tf

from conftest import tiny_generator
from sparse_gen_tf import Generator, log_joint
from sparse_gen_tf.learning.inference import infer, starting_points

CONFIG = tiny_generator(image_size=16, latent_dim=8, channels=(16, 8), topk=(16, 32))


def sharp_generator():
    """A random generator whose image depends strongly on z, so the posterior is peaked.

    Seeded: unseeded Keras initialisers give other weights in every process, and how much
    restarts gain over one chain varies with the weights (mean energy ratio 0.41-0.81 over
    six seeds at 32 images), which made a test of that gain fail one run in several.
    """
    keras.utils.set_random_seed(0)
    generator = Generator(CONFIG)
    for weight in generator.trainable_weights:
        weight.assign(weight * 3.0)
    return generator


def energy(generator, z, images, sigma=0.3, observed=None):
    log_likelihood, log_prior = log_joint(generator, z, images, sigma, observed)
    return -(log_likelihood + log_prior).numpy()


def compiled(generator, **kwargs):
    return tf.function(lambda images, observed=None: infer(
        generator, images, step_size=0.1, sigma=0.3, observed=observed, **kwargs),
        jit_compile=True)


def test_infer_compiles_with_xla_and_is_reproducible():
    generator = sharp_generator()
    images = generator(tf.random.stateless_normal([3, 8], [1, 1]))
    run = compiled(generator, steps=6, restarts=3, seed=5, anneal_sigma=3.0,
                   anneal_stages=2, refine_steps=2)
    z = run(images).numpy()
    assert z.shape == (3, 8) and np.isfinite(z).all()
    np.testing.assert_array_equal(run(images).numpy(), z)


def test_restarts_and_annealing_find_lower_energy_than_plain_langevin():
    generator = sharp_generator()
    images = generator(tf.random.stateless_normal([32, 8], [2, 2]))
    # The baseline is what these options add to: one chain from N(0, I), as many
    # gradient steps per chain (no refinement on either side: it has its own test).
    # Configured like the baseline, "robust" is the baseline, and fails both asserts.
    plain = compiled(generator, steps=60, restarts=1, seed=0)(images)
    robust = compiled(generator, steps=60, restarts=4, seed=0, anneal_sigma=4.0,
                      anneal_stages=3)(images)
    before, after = energy(generator, plain, images), energy(generator, robust, images)
    # 32 images: with 8 the mean was one or two images' luck. These weights give 0.64 and
    # 78% of images improved; over 18 other draws (Keras seeds 0-2, image seeds [2, 2],
    # [3, 3], [4, 4], inference seeds 0-1) the ratio was 0.49-0.74 and 66-97% improved.
    assert after.mean() < 0.8 * before.mean(), (before, after)
    assert (after < before).mean() > 0.6, (before, after)


def test_the_best_of_the_bank_is_where_chains_start():
    generator = sharp_generator()
    truth = tf.random.stateless_normal([2, 8], [3, 3])
    bank = tf.concat([tf.random.stateless_normal([20, 8], [4, 4]), truth], 0)
    images = generator(truth)
    start = starting_points(generator, images, [0, 0], restarts=3, sigma=0.3, bank=bank)
    assert start.shape == (3, 2, 8)
    np.testing.assert_array_equal(start[0], truth)
    # With no Langevin steps, the selected chain is the true latent itself.
    z = infer(generator, images, steps=0, step_size=0.1, sigma=0.3, restarts=3, bank=bank)
    np.testing.assert_array_equal(z, truth)


def test_masked_pixels_do_not_change_the_inferred_z():
    generator = sharp_generator()
    images = generator(tf.random.stateless_normal([2, 8], [5, 5])).numpy()
    observed = np.ones([2, 16, 16, 1], np.float32)
    observed[:, 4:12, 8:] = 0.0  # an occluder over part of the right half
    occluded = images.copy()
    occluded[:, 4:12, 8:] = np.random.default_rng(0).uniform(-1, 1, (2, 8, 8, 3))
    bank = tf.random.stateless_normal([16, 8], [6, 6])
    run = compiled(generator, steps=10, restarts=2, seed=3, bank=bank, anneal_sigma=2.0,
                   anneal_stages=2, refine_steps=3)
    z_clean = run(tf.constant(images), tf.constant(observed)).numpy()
    z_occluded = run(tf.constant(occluded), tf.constant(observed)).numpy()
    np.testing.assert_allclose(z_occluded, z_clean, rtol=1e-5, atol=1e-5)
    # Without the mask the occluder does change z: the test above can fail.
    unmasked = compiled(generator, steps=10, restarts=2, seed=3, bank=bank)
    assert not np.allclose(unmasked(tf.constant(images)), unmasked(tf.constant(occluded)))


def test_refinement_climbs_the_log_joint_with_its_own_step_size():
    generator = sharp_generator()
    images = generator(tf.random.stateless_normal([4, 8], [7, 7]))
    common = dict(steps=10, restarts=2, seed=1)
    unrefined = compiled(generator, **common)(images)
    refined = compiled(generator, refine_steps=30, refine_step_size=0.02, **common)(images)
    # Noise-free ascent from the same selected chain only raises log p(z, Y).
    assert (energy(generator, refined, images) < energy(generator, unrefined, images)).all()
    # Without refine_step_size the refinement takes the Langevin δ (0.1 here): another z.
    at_delta = compiled(generator, refine_steps=30, **common)(images)
    same = compiled(generator, refine_steps=30, refine_step_size=0.1, **common)(images)
    np.testing.assert_array_equal(at_delta, same)
    assert not np.allclose(at_delta, refined)
