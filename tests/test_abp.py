"""Alternating back-propagation: persistent chains, the train step and its metrics."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import tiny_generator
from sparse_gen_tf import AlternatingBackprop, Generator, LangevinConfig, log_joint

CONFIG = tiny_generator(image_size=16)


def make_model(num_examples, jit_compile=False, learning_rate=1e-3, **kwargs):
    model = AlternatingBackprop(Generator(CONFIG), num_examples, **kwargs)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), jit_compile=jit_compile)
    return model


def test_persistent_z_follows_the_example_id_across_shuffles():
    n = 12
    model = make_model(n, langevin=LangevinConfig(steps=1, step_size=0.5), langevin_noise=False)
    images = tf.random.stateless_uniform([n, 16, 16, 3], [0, 1], -1, 1)
    before = model.chains.numpy().copy()
    ids = tf.constant([7, 2, 11, 0], tf.int32)  # a shuffled batch
    # One noise-free Langevin step from each example's own chain, with the weights as they
    # are before the step's weight update: z_i + δ²/2 ∇ log p(z_i, Y_i).
    z = tf.gather(before, ids)
    with tf.GradientTape() as tape:
        tape.watch(z)
        log_p = tf.reduce_sum(tf.add_n(log_joint(model.generator, z, tf.gather(images, ids),
                                                 0.3)))
    expected = z + 0.5 * 0.5 ** 2 * tape.gradient(log_p, z)
    model.train_on_batch(ids, tf.gather(images, ids))
    after = model.chains.numpy()
    np.testing.assert_allclose(after[ids.numpy()], expected.numpy(), rtol=1e-5, atol=1e-6)
    untouched = np.setdiff1d(np.arange(n), ids.numpy())
    np.testing.assert_array_equal(after[untouched], before[untouched])


def test_one_epoch_under_xla_updates_every_chain_and_the_weights():
    n = 16
    model = make_model(n, jit_compile=True, langevin=LangevinConfig(steps=3, step_size=0.1))
    images = tf.random.stateless_uniform([n, 16, 16, 3], [2, 3], -1, 1)
    dataset = (tf.data.Dataset.from_tensor_slices((tf.range(n), images))
               .shuffle(n, seed=1).batch(4, drop_remainder=True))
    chains = model.chains.numpy().copy()
    kernel = model.generator.deconvs[-1].kernel.numpy().copy()
    history = model.fit(dataset, epochs=1, verbose=0)
    assert (np.abs(model.chains.numpy() - chains).max(axis=1) > 0).all()
    assert not np.allclose(model.generator.deconvs[-1].kernel.numpy(), kernel)
    logs = {k: v[-1] for k, v in history.history.items()}
    for name in ("loss", "mse", "psnr", "log_likelihood", "log_prior", "z_norm",
                 "nonzero_1", "nonzero_2", "dead_channels_1", "dead_channels_2"):
        assert np.isfinite(logs[name]), name
    # TopK bounds the fraction of non-zero activations by K / size.
    assert 0 < logs["nonzero_1"] <= 8 / (2 * 2 * 8)
    assert 0 < logs["nonzero_2"] <= 16 / (4 * 4 * 8)
    np.testing.assert_allclose(logs["psnr"], 10 * np.log10(4 / logs["mse"]), rtol=0.05)


def test_a_steps_sparsity_metrics_are_those_of_its_parses():
    n = 8
    model = make_model(n, langevin=LangevinConfig(steps=3, step_size=0.1))
    # Bottom channel 3 made dead: its bias puts all its units below TopK's K and ReLU's 0.
    bias = model.generator.deconvs[0].bias
    bias.assign(tf.tensor_scatter_nd_update(bias, [[3]], [-1000.0]))
    before = Generator(CONFIG)
    before.set_weights(model.generator.get_weights())
    images = tf.random.stateless_uniform([n, 16, 16, 3], [6, 7], -1, 1)
    logs = model.train_on_batch(tf.range(n), images, return_dict=True)
    # The step parses the z it inferred (now the chains) with the weights before its update.
    parse = before.parse(model.chains.numpy())
    for i, activation in enumerate(parse["activations"], 1):
        used = activation.numpy() != 0
        assert logs[f"dead_channels_{i}"] == (~used.any(axis=(0, 1, 2))).sum(), i
        np.testing.assert_allclose(logs[f"nonzero_{i}"], used.mean(), rtol=1e-6)
    assert not used[..., 3].any() and logs["dead_channels_2"] >= 1


@pytest.mark.slow
def test_training_reduces_reconstruction_error():
    n = 32
    model = make_model(n, jit_compile=True, learning_rate=3e-3,
                       langevin=LangevinConfig(steps=10))
    target = Generator(CONFIG)
    for weight in target.trainable_weights:
        weight.assign(weight * 3.0)
    images = target(tf.random.stateless_normal([n, 4], [4, 5]))
    model.generator.initialize_output_bias(np.mean(images, axis=(0, 1, 2)))
    dataset = tf.data.Dataset.from_tensor_slices((tf.range(n), images)).batch(8)
    history = model.fit(dataset, epochs=30, verbose=0)
    mse = history.history["mse"]
    assert mse[-1] < 0.75 * mse[0], mse


def test_dead_channels_counts_channels_never_selected():
    from sparse_gen_tf.learning.abp import DeadChannels
    metric = DeadChannels(4)
    mask = np.zeros([2, 3, 3, 4], "float32")
    mask[0, 1, 1, 0] = 1
    mask[1, 0, 2, 3] = 1
    metric.update_state(mask)
    assert float(metric.result()) == 2.0
    metric.reset_state()
    assert float(metric.result()) == 4.0
