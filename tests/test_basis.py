"""The sparse-coding view (§2.2): basis functions and the Eq. (5) identity."""

import numpy as np
import pytest
import tensorflow as tf

from sparse_gen_tf import Generator, GeneratorConfig
from sparse_gen_tf.explanation import basis

THREE_LAYERS = GeneratorConfig(image_size=16, latent_dim=8, channels=(8, 8, 4),
                               topk=(6, 12, 20), kernel_sizes=(3, 4, 4), strides=(1, 2, 4))
DENSE = GeneratorConfig(image_size=16, latent_dim=8, channels=(4, 8), topk=(16, 128),
                        kernel_sizes=(4, 4), strides=(2, 4))


def random_generator(config, seed=0, bias_shift=0.0):
    """Random weights and biases (the default zero biases would hide bias bugs)."""
    generator = Generator(config)
    for i, weight in enumerate(generator.trainable_weights):
        weight.assign(tf.random.stateless_normal(weight.shape, [seed, i]) * 0.5)
    generator.fc.bias.assign(generator.fc.bias + bias_shift)
    return generator


@pytest.mark.parametrize("config", [THREE_LAYERS, DENSE], ids=["sparse3", "dense"])
def test_eq5_identity_holds_for_every_layer(config):
    generator = random_generator(config)
    parse = generator.parse(tf.random.stateless_normal([3, 8], [1, 2]))
    for layer in range(1, generator.num_layers + 1):
        error = basis.identity_error(generator, parse, layer).numpy()
        assert (error < 1e-4).all(), (layer, error)
        found = basis.basis_functions(generator, parse, layer)
        # Σ_j s_j B_j + c_i and Σ_j terms_j both rebuild the pre-tanh image.
        np.testing.assert_allclose(basis.synthesize(found), parse["logits"], rtol=1e-4,
                                   atol=1e-4)
        np.testing.assert_allclose(tf.reduce_sum(found["terms"], 1), parse["logits"],
                                   rtol=1e-4, atol=1e-4)


def test_identity_is_exact_when_relu_switches_off_topk_survivors():
    # A negative FC bias makes some of the K kept entries negative: ReLU zeroes them, so
    # fewer than K activations survive, and the bias must be shared among those only.
    generator = random_generator(THREE_LAYERS, seed=3, bias_shift=-1.5)
    parse = generator.parse(tf.random.stateless_normal([4, 8], [5, 6]))
    found = basis.basis_functions(generator, parse, 1)
    assert (found["num_active"].numpy() < 6).any(), found["num_active"]
    assert (basis.identity_error(generator, parse, 1).numpy() < 1e-4).all()


def test_a_bottom_basis_function_is_its_kernel_in_place():
    config = GeneratorConfig(image_size=16, latent_dim=4, channels=(4, 5), topk=(4, 6),
                             kernel_sizes=(4, 4), strides=(2, 4))
    generator = random_generator(config)
    parse = generator.parse(tf.random.stateless_normal([2, 4], [7, 8]))
    found = basis.basis_functions(generator, parse, 2)
    kernel = generator.deconvs[-1].kernel.numpy()
    for b in range(2):
        for j in np.flatnonzero(found["valid"][b].numpy()):
            y, x, c = found["position"][b, j].numpy()
            expected = np.zeros((16, 16, 3), np.float32)
            expected[4 * y:4 * y + 4, 4 * x:4 * x + 4] = kernel[c]
            np.testing.assert_allclose(found["basis"][b, j], expected, atol=1e-6)
    # The offset of the bottom layer is its bias, broadcast: Eq. (3).
    np.testing.assert_allclose(found["offset"][0, 5, 5], generator.deconvs[-1].bias,
                               atol=1e-6)


def test_surviving_lists_coefficients_largest_first_with_positions():
    activation = np.zeros([1, 2, 2, 3], np.float32)
    activation[0, 1, 0, 2] = 5.0
    activation[0, 0, 1, 0] = 2.0
    found = basis.surviving(tf.constant(activation), 3)
    np.testing.assert_array_equal(found["coefficient"][0], [5.0, 2.0, 0.0])
    np.testing.assert_array_equal(found["position"][0, :2], [[1, 0, 2], [0, 1, 0]])
    np.testing.assert_array_equal(found["valid"][0], [True, True, False])
