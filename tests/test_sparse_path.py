"""The sparse Langevin path computes the dense generator's function exactly.

`TopK.units` -> `TransposedConv.paint` -> `Generator.paint` against `TopK.call` ->
`TransposedConv.call` -> `Generator.parse`: forward images, ∂/∂z and ∂/∂θ, with ties at
the TopK thresholds, for kernel == stride and kernel > stride, eagerly and under XLA
(with the bisection thresholds), and one train step under a two-replica MirroredStrategy.
"""

import os

import numpy as np
import pytest
import tensorflow as tf

from conftest import run_mirrored, tiny_generator
from sparse_gen_tf import AlternatingBackprop, Generator, GeneratorConfig, langevin
from sparse_gen_tf.model import sparse_kernels
from sparse_gen_tf.model.layers import TopK, TransposedConv, running_count

# kernel > stride with overlapping windows on top, kernel == stride (disjoint cells) below.
CONFIG = tiny_generator(image_size=16, latent_dim=6, channels=(8, 6), topk=(5, 12))
# kernel > stride in the image layer too, and a kernel that is not a whole number of
# strides (3 = 1.5 x 2): the padded, cropped overlap-add.
OVERLAPPING = tiny_generator(image_size=16, latent_dim=6, channels=(8, 6), topk=(5, 12),
                             kernel_sizes=(3, 6))


def xla(function):
    return tf.function(function, jit_compile=True)


def tied_generator(config):
    """A generator whose feature maps are full of exact ties: weights, biases and (the
    caller's) z are small multiples of 1/2, so many entries equal each TopK threshold."""
    generator = Generator(config)
    rng = np.random.default_rng(0)
    for weight in generator.trainable_weights:
        weight.assign(rng.integers(-1, 2, weight.shape).astype(np.float32) / 2)
    return generator


def tied_latents(batch, dim):
    return tf.constant(np.random.default_rng(1).integers(-1, 2, (batch, dim)), tf.float32)


def has_surplus_ties(x, k):
    """True when some example has more entries equal to its K-th largest than TopK keeps."""
    flat = np.sort(np.reshape(x, [len(x), -1]), axis=1)[:, ::-1]
    threshold = flat[:, k - 1:k]
    return bool(((flat == threshold).sum(1) > k - (flat > threshold).sum(1)).any())


@pytest.mark.parametrize("compiled", [False, True])
def test_units_are_exactly_the_kept_entries_in_ascending_order(compiled):
    x = tf.constant(np.random.default_rng(2).integers(0, 4, (3, 4, 4, 5)), tf.float32)
    topk = TopK(17)
    topk.bisection = compiled
    assert has_surplus_ties(x.numpy(), 17)
    units = xla(topk.units) if compiled else topk.units
    values, indices = (t.numpy() for t in units(x))
    assert values.shape == indices.shape == (3, 17)
    assert (np.diff(indices, axis=1) > 0).all()
    painted = np.zeros([3, 80], np.float32)
    np.put_along_axis(painted, indices, values, axis=1)
    np.testing.assert_array_equal(painted, np.reshape(topk(x).numpy(), [3, 80]))


def test_units_of_a_dense_layer_are_every_entry():
    x = tf.random.stateless_normal([2, 2, 2, 3], [0, 3])
    values, indices = TopK(12).units(x)
    np.testing.assert_array_equal(values, tf.reshape(x, [2, 12]))
    np.testing.assert_array_equal(indices, np.tile(np.arange(12), (2, 1)))


def test_running_count_is_the_cumulative_sum():
    mask = (np.random.default_rng(3).uniform(size=(4, 96)) < 0.3).astype(np.float32)
    np.testing.assert_array_equal(running_count(tf.constant(mask)), np.cumsum(mask, 1))
    odd = mask[:, :45]  # not a whole number of blocks: one block
    np.testing.assert_array_equal(running_count(tf.constant(odd)), np.cumsum(odd, 1))


@pytest.mark.parametrize("kernel_size,strides", [(4, 4), (4, 2), (3, 2), (6, 4), (1, 1)])
@pytest.mark.parametrize("compiled", [False, True])
def test_paint_equals_call_on_the_sparse_map(kernel_size, strides, compiled):
    deconv = TransposedConv(5, kernel_size, strides)
    deconv.build((None, 3, 4, 7))
    deconv.bias.assign(tf.random.stateless_normal([5], [1, 4]))
    topk = TopK(9)
    topk.bisection = compiled
    x = tf.random.stateless_normal([2, 3, 4, 7], [0, 4])
    blocked = deconv.paints_disjoint_cells and strides > 1

    def both(x):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x)
            values, indices = topk.units(x)
            sparse = deconv.paint(values, indices, (3, 4, 7), blocked=blocked)
            dense = deconv(topk(x), blocked=blocked)
            # A weighting that is not all ones, so that the read-back is position-specific.
            weights = tf.reshape(tf.range(tf.size(dense[0]), dtype=tf.float32),
                                 dense.shape[1:]) / 100.0
            sparse_loss = tf.reduce_sum(tf.sin(sparse) * weights)
            dense_loss = tf.reduce_sum(tf.sin(dense) * weights)
        weights_list = [x, deconv.kernel, deconv.bias]
        return (sparse, dense, tape.gradient(sparse_loss, weights_list),
                tape.gradient(dense_loss, weights_list))

    sparse, dense, sparse_grads, dense_grads = (xla(both) if compiled else both)(x)
    np.testing.assert_allclose(sparse, dense, rtol=1e-5, atol=1e-5)
    for name, s, d in zip(("x", "kernel", "bias"), sparse_grads, dense_grads):
        assert np.abs(d).max() > 0, name
        np.testing.assert_allclose(s, d, rtol=1e-4, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("config", [CONFIG, OVERLAPPING], ids=["k==s", "k>s"])
@pytest.mark.parametrize("compiled", [False, True])
def test_sparse_path_matches_dense_on_images_and_gradients_with_ties(config, compiled):
    generator = tied_generator(config)
    for topk in generator.topks:
        topk.bisection = compiled
    z = tied_latents(4, config.latent_dim)
    parse = generator.parse(z)
    for fm, k in zip(parse["feature_maps"], config.topk):
        assert has_surplus_ties(fm.numpy(), k)
    images = tf.random.stateless_uniform([4, 16, 16, 3], [0, 5], -1, 1)

    def run(z, sparse):
        generator.sparse_path = sparse
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(z)
            # Inside the tape: the loop-invariant kernels it computes carry ∂/∂θ.
            squared_error = generator.squared_error_fn(images)
            image = tf.tanh(generator.paint(z)) if sparse else generator.parse(z)["image"]
            error = tf.reduce_sum(squared_error(z))
        return (image, error, tape.gradient(error, z),
                tape.gradient(error, generator.trainable_weights))

    run = xla(run) if compiled else run
    dense, sparse = run(z, False), run(z, True)
    generator.sparse_path = False
    np.testing.assert_allclose(sparse[0], dense[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sparse[1], dense[1], rtol=1e-5)
    assert np.abs(dense[2]).max() > 0
    np.testing.assert_allclose(sparse[2], dense[2], rtol=1e-4, atol=1e-4)
    for weight, s, d in zip(generator.trainable_weights, sparse[3], dense[3]):
        np.testing.assert_allclose(s, d, rtol=1e-4, atol=1e-4, err_msg=weight.path)


def test_langevin_chains_agree_on_both_paths():
    generator = Generator(CONFIG)
    images = tf.random.stateless_uniform([4, 16, 16, 3], [0, 6], -1, 1)
    z0 = tf.random.stateless_normal([4, CONFIG.latent_dim], [0, 7])
    for topk in generator.topks:
        topk.bisection = True
    chains = []
    for sparse in (False, True):
        generator.sparse_path = sparse
        run = tf.function(langevin, jit_compile=True)
        chains.append(run(generator, z0, images, tf.constant([1, 2]), steps=5,
                          step_size=0.1, sigma=0.3).numpy())
    assert np.abs(chains[0] - z0).max() > 1e-2
    np.testing.assert_allclose(chains[1], chains[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("topk,jit_compile,kernels,expected", [
    ((64, 128), True, None, "kernels"),   # the paper's 6.25%: the compiled kernels fastest
    ((10, 20), True, None, "kernels"),    # 1%: so are they
    ((128, 256), True, None, "dense"),    # 12.5%: above SPARSE_KERNELS_MAX_DENSITY
    ((64, 128), True, False, "dense"),    # kernels off: at 6.25% dense beats XLA's sparse
    ((10, 20), True, False, "sparse"),    # kernels off: at 1% XLA's sparse path wins
    ((10, 20), False, None, "dense"),     # no XLA: the paths were only measured under XLA
])
@pytest.mark.parametrize("gpu", [False, True])
def test_compile_picks_the_measured_faster_path(host_gpus, topk, jit_compile, kernels,
                                                expected, gpu):
    host_gpus(gpu)  # on a GPU neither sparse path was measured (the kernels are CPU ones)
    config = GeneratorConfig(image_size=64, latent_dim=8, channels=(256, 128), topk=topk,
                             kernel_sizes=(4, 16), strides=(2, 16))
    model = AlternatingBackprop(Generator(config), 4, sparse_kernels=kernels)
    model.compile(optimizer="adam", jit_compile=jit_compile)
    path = ("kernels" if model.uses_sparse_kernels
            else "sparse" if model.generator.sparse_path else "dense")
    if expected == "kernels" and sparse_kernels.unavailable_reason() and not os.environ.get(
            "CI"):
        expected = "dense"  # no C++ compiler here; CI installs one
    assert path == ("dense" if gpu else expected)


# One epoch of two global batches under a two-replica MirroredStrategy (Langevin under
# XLA), dense path against sparse path, from the same weights and chains.
# (After conftest.MIRRORED_SETUP: strategy, config, n, images, dataset.)
MIRRORED = """
models = []
for sparse in (False, True):
    with strategy.scope():
        model = AlternatingBackprop(Generator(config), n, langevin=LangevinConfig(steps=3),
                                    jit_langevin=True)
        model.compile(optimizer=keras.optimizers.SGD(0.05), jit_compile=False)
    model.generator.sparse_path = sparse
    if models:
        model.generator.set_weights(models[0].generator.get_weights())
        model.chains.assign(models[0].chains.numpy())
    models.append(model)
logs = [model.fit(dataset, epochs=1, verbose=0).history["loss"] for model in models]
np.savez(sys.argv[1], replicas=strategy.num_replicas_in_sync, dense_loss=logs[0],
         sparse_loss=logs[1], dense_chains=models[0].chains.numpy(),
         sparse_chains=models[1].chains.numpy(),
         **{f"dense_w{i}": w for i, w in enumerate(models[0].generator.get_weights())},
         **{f"sparse_w{i}": w for i, w in enumerate(models[1].generator.get_weights())})
"""


@pytest.mark.slow
def test_sparse_path_trains_like_the_dense_one_under_mirrored_strategy(tmp_path):
    run = run_mirrored(MIRRORED, str(tmp_path / "run.npz"))
    assert run["replicas"] == 2
    np.testing.assert_allclose(run["sparse_loss"], run["dense_loss"], rtol=1e-5)
    np.testing.assert_allclose(run["sparse_chains"], run["dense_chains"], rtol=1e-4,
                               atol=1e-5)
    weights = sorted(k for k in run if k.startswith("dense_w"))
    assert weights
    for key in weights:
        np.testing.assert_allclose(run[key.replace("dense", "sparse")], run[key],
                                   rtol=1e-4, atol=1e-5, err_msg=key)
