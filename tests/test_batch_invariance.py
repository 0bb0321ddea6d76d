"""Batch invariance: with `batch_invariant` on, an example's bits do not depend on its batch.

Each test runs a function as the served graph does (a tf.function whose batch dimension
is unknown, one trace for every batch size) on a batch, then on other batches of the same
rows (sizes 1 to 17, other neighbours and orders), and asserts that every row comes out
bit for bit the same, forward and through the gradients that Langevin steps take.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from sparse_gen_tf import Generator, GeneratorConfig, TransposedConv
from sparse_gen_tf.learning.langevin import langevin
from sparse_gen_tf.model.encoder import Encoder, EncoderConfig
from sparse_gen_tf.model.layers import matmul
from sparse_gen_tf.serving import serving_graph

# Rows of a batch of 25 taken as batches of 1, 1, 2, 3, 5 and 17.
BATCHES = ([0], [24], [5, 2], [0, 1, 2], [3, 1, 4, 6, 0], list(range(8, 25)))


def assert_rows_are_batch_invariant(fn, *inputs):
    """fn(*inputs) row by row against fn of each batch in BATCHES, bit for bit."""
    specs = [tf.TensorSpec([None, *x.shape[1:]], x.dtype) for x in inputs]
    traced = tf.function(fn, input_signature=specs)
    full = tf.nest.map_structure(np.asarray, traced(*inputs))
    for rows in BATCHES:
        alone = traced(*[tf.gather(x, rows) for x in inputs])
        for got, want in zip(tf.nest.flatten(alone), tf.nest.flatten(full)):
            np.testing.assert_array_equal(got, want[rows], err_msg=f"rows {rows}")


def with_gradient(fn):
    """x -> (fn(x), ∂/∂x of sum(fn(x)²)): the output and the gradient a Langevin step takes."""
    def both(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn(x)
            loss = tf.reduce_sum(tf.square(y))
        return y, tape.gradient(loss, x)
    return both


def test_matmul_gives_each_row_its_own_bits_and_the_same_product():
    # n = 512: here TensorFlow's own MatMul rounds a row alone (a matrix-vector product)
    # differently from the same row among others.
    rng = np.random.RandomState(0)
    x = tf.constant(rng.standard_normal([25, 512]).astype(np.float32))
    kernel = tf.constant(rng.standard_normal([512, 64]).astype(np.float32))
    assert_rows_are_batch_invariant(
        with_gradient(lambda x: matmul(x, kernel, batch_invariant=True)), x)
    np.testing.assert_allclose(matmul(x, kernel, batch_invariant=True), tf.matmul(x, kernel),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("form", ["blocked", "unrolled", "windowed"])
def test_transposed_conv_gives_each_example_its_own_bits_in_every_kernel_form(form):
    keras.utils.set_random_seed(1)
    layer = TransposedConv(24, 4, 2)
    layer.build((None, 2, 2, 64))
    layer.batch_invariant = True
    kernel = {"blocked": None, "unrolled": layer.unrolled_kernel((2, 2, 64)),
              "windowed": layer.windowed_kernel((2, 2, 64))}[form]
    x = tf.random.stateless_normal([25, 2, 2, 64], [1, 2])
    assert_rows_are_batch_invariant(with_gradient(lambda x: layer(x, kernel=kernel)), x)
    layer.batch_invariant = False
    plain = layer(x, kernel=kernel)
    layer.batch_invariant = True
    np.testing.assert_allclose(layer(x, kernel=kernel), plain, rtol=1e-4, atol=1e-4)


def random_generator(config=GeneratorConfig()):
    """The default generator with random biases (zero biases tie at every TopK)."""
    keras.utils.set_random_seed(0)
    generator = Generator(config)
    rng = np.random.RandomState(0)
    for variable in generator.weights:
        if variable.path.endswith("bias"):
            variable.assign(rng.normal(0.0, 0.1, variable.shape).astype(np.float32))
    return generator


def test_generator_parses_and_langevin_steps_give_each_example_its_own_bits():
    generator = random_generator()
    generator.batch_invariant = True
    z = tf.random.stateless_normal([25, 32], [3, 4])
    images = tf.random.stateless_uniform([25, 32, 32, 3], [5, 6], -1, 1)

    def parse_and_refine(z, images):
        parse = generator.parse(z)
        refined = langevin(generator, z, images, [0, 0], steps=3, step_size=0.1, sigma=0.3,
                           noise=False)
        return parse["image"], parse["activations"], parse["topk_masks"], refined

    assert_rows_are_batch_invariant(parse_and_refine, z, images)
    generator.batch_invariant = False
    np.testing.assert_allclose(parse_and_refine(z, images)[0], generator(z), atol=1e-5)


def test_encoder_gives_each_image_its_own_bits_and_computes_its_convolutions():
    keras.utils.set_random_seed(2)
    encoder = Encoder(EncoderConfig(), latent_dim=32, image_size=32)
    images = tf.random.stateless_uniform([25, 32, 32, 3], [7, 8], -1, 1)
    plain = encoder(images)
    encoder.batch_invariant = True
    assert_rows_are_batch_invariant(encoder, images)
    np.testing.assert_allclose(encoder(images), plain, rtol=1e-4, atol=1e-5)


def test_serving_graph_sets_the_served_settings_and_restores_the_training_ones():
    generator = random_generator()
    encoder = Encoder(EncoderConfig(channels=(8,)), latent_dim=32, image_size=32)
    for topk in generator.topks:
        topk.bisection = True
    with serving_graph(generator, encoder):
        assert generator.batch_invariant and encoder.batch_invariant
        assert not any(topk.bisection for topk in generator.topks)
    assert not generator.batch_invariant and not encoder.batch_invariant
    assert all(topk.bisection for topk in generator.topks)
