"""TopK and TransposedConv: the two layers the generator is made of."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from sparse_gen_tf import AlternatingBackprop, Generator, GeneratorConfig, TopK, TransposedConv
from sparse_gen_tf.model.layers import kth_largest, kth_largest_by_bisection


def test_topk_keeps_exactly_k_largest_per_example():
    x = tf.random.stateless_normal([4, 3, 3, 5], seed=[1, 2])
    y, mask = TopK(7)(x, return_mask=True)
    flat_x, flat_y = x.numpy().reshape(4, -1), y.numpy().reshape(4, -1)
    for row_x, row_y in zip(flat_x, flat_y):
        kept = np.flatnonzero(row_y)
        assert len(kept) == 7
        np.testing.assert_array_equal(np.sort(kept), np.sort(np.argsort(-row_x)[:7]))
        np.testing.assert_array_equal(row_y[kept], row_x[kept])
    assert mask.numpy().sum(axis=(1, 2, 3)).tolist() == [7] * 4


def test_topk_keeps_exactly_k_with_ties():
    x = tf.constant([[3.0, 1.0, 1.0, 1.0, 1.0, 0.0],
                     [2.0, 2.0, 2.0, 2.0, 2.0, 2.0]])
    _, mask = TopK(3)(x, return_mask=True)
    np.testing.assert_array_equal(mask.numpy(), [[1, 1, 1, 0, 0, 0], [1, 1, 1, 0, 0, 0]])


def test_topk_keeps_exactly_k_with_ties_under_xla():
    layer = TopK(5)
    x = tf.constant(np.repeat([[0.5, -1.0]], 8, axis=1).astype("float32"))
    _, mask = tf.function(lambda x: layer(x, return_mask=True), jit_compile=True)(x)
    assert mask.numpy().sum() == 5


def hard_rows():
    """Rows with ties at the threshold, negatives, zeros of both signs, infinities and
    values one ulp apart: everything the bit bisection has to order right."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(6, 300)).astype(np.float32)
    x[0, :200] = 0.5                       # a tie group around the threshold
    x[1] = -np.abs(x[1])                   # all negative
    x[2, ::2], x[2, 1::2] = 0.0, -0.0      # signed zeros
    x[3, :5], x[3, 5:10] = np.inf, -np.inf
    x[4] = np.nextafter(np.float32(1.0), np.float32(2.0), dtype=np.float32) * (
        np.arange(300) % 2) + (1 - np.arange(300) % 2)  # 1 and 1 + ulp
    x[5] = rng.normal(size=300).astype(np.float32) * 1e-30  # tiny values
    return x


@pytest.mark.parametrize("k", [1, 7, 150, 299, 300])
def test_bisection_threshold_is_top_ks_bit_for_bit(k):
    x = hard_rows()
    reference = tf.reduce_min(tf.math.top_k(x, k=k).values, -1, keepdims=True).numpy()
    eager = kth_largest_by_bisection(tf.constant(x), k).numpy()
    compiled = tf.function(lambda v: kth_largest(v, k, bisection=True),
                           jit_compile=True)(tf.constant(x)).numpy()
    np.testing.assert_array_equal(eager, reference)
    np.testing.assert_array_equal(compiled, reference)


def test_topk_with_bisection_keeps_exactly_k_with_ties_under_xla():
    layer = TopK(150)
    layer.bisection = True
    x = tf.constant(hard_rows())
    mask = tf.function(lambda v: layer(v, return_mask=True)[1], jit_compile=True)(x)
    np.testing.assert_array_equal(tf.reduce_sum(mask, -1).numpy(), [150] * 6)
    eager_mask = TopK(150)(x, return_mask=True)[1]
    np.testing.assert_array_equal(mask.numpy(), eager_mask.numpy())


@pytest.mark.parametrize("jit_compile,gpu,expected", [
    (True, False, True),     # XLA on a CPU: top_k is a serial sort there, bisect
    (False, False, False),   # no XLA: TensorFlow's own top_k
    (True, True, False),     # XLA compiles for the GPU: its top_k is the faster one
    (False, True, False),
])
def test_compile_picks_bisection_for_xla_on_cpu(host_gpus, jit_compile, gpu, expected):
    host_gpus(gpu)
    model = AlternatingBackprop(Generator(GeneratorConfig()), 8)
    model.compile(optimizer="adam", jit_compile=jit_compile)
    assert [t.bisection for t in model.generator.topks] == [expected] * 2


def test_topk_gradient_flows_only_to_kept_entries():
    x = tf.constant([[0.1, 5.0, -2.0, 3.0, 0.2]])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = TopK(2)(x)
        loss = tf.reduce_sum(y * tf.constant([[1.0, 2.0, 3.0, 4.0, 5.0]]))
    np.testing.assert_array_equal(tape.gradient(loss, x).numpy(), [[0, 2, 0, 4, 0]])


def test_topk_with_k_at_least_size_is_identity():
    x = tf.random.stateless_normal([2, 2, 2, 3], seed=[3, 4])
    np.testing.assert_array_equal(TopK(12)(x).numpy(), x.numpy())
    np.testing.assert_array_equal(TopK(100)(x).numpy(), x.numpy())


def test_topk_rejects_nonpositive_k():
    with pytest.raises(ValueError, match="k > 0"):
        TopK(0)


def test_topk_config_round_trip():
    layer = TopK(9, name="t")
    clone = TopK.from_config(layer.get_config())
    assert clone.k == 9 and clone.name == "t"


@pytest.mark.parametrize("kernel,stride,size", [(4, 2, 2), (16, 16, 4), (5, 2, 3), (3, 1, 4),
                                                (8, 8, 4), (6, 4, 2)])
def test_transposed_conv_matches_conv2d_transpose(kernel, stride, size):
    layer = TransposedConv(5, kernel, stride, kernel_initializer="random_normal")
    x = tf.random.stateless_normal([2, size, size, 3], seed=[5, kernel])
    y = layer(x, include_bias=False)
    # tf.nn.conv2d_transpose wants the kernel as [k, k, out, in].
    reference = tf.nn.conv2d_transpose(
        x, tf.transpose(layer.kernel, [1, 2, 3, 0]), [2, size * stride, size * stride, 5],
        stride, padding="SAME")
    np.testing.assert_allclose(y.numpy(), reference.numpy(), atol=1e-5)


def test_transposed_conv_one_unit_paints_its_kernel_patch():
    layer = TransposedConv(2, 4, 4)
    layer.build((None, 2, 2, 3))
    x = np.zeros([1, 2, 2, 3], "float32")
    x[0, 1, 0, 2] = 2.0
    y = layer(x, include_bias=False).numpy()[0]
    np.testing.assert_allclose(y[4:8, 0:4], 2.0 * layer.kernel.numpy()[2], rtol=1e-6)
    y[4:8, 0:4] = 0
    assert not y.any()


def test_transposed_conv_under_xla_matches_eager():
    layer = TransposedConv(4, 4, 2, kernel_initializer="random_normal")
    x = tf.random.stateless_normal([3, 4, 4, 6], seed=[7, 8])
    eager = layer(x)
    compiled = tf.function(layer, jit_compile=True)(x)
    np.testing.assert_allclose(compiled.numpy(), eager.numpy(), atol=1e-5)


@pytest.mark.parametrize("kernel,stride", [(4, 2), (16, 16), (5, 2)])
def test_transposed_conv_with_a_precomputed_kernel_is_the_same_layer(kernel, stride):
    layer = TransposedConv(4, kernel, stride, kernel_initializer="random_normal")
    x = tf.random.stateless_normal([2, 3, 3, 5], seed=[1, kernel])
    layer.build(x.shape)
    layer.bias.assign(tf.random.stateless_normal([4], [2, 2]))
    np.testing.assert_allclose(layer(x, kernel=layer.matmul_kernel()).numpy(),
                               layer(x).numpy(), rtol=1e-6)


def test_transposed_conv_blocked_output_is_space_to_depth_of_the_output():
    layer = TransposedConv(3, 8, 8, kernel_initializer="random_normal")
    x = tf.random.stateless_normal([2, 2, 2, 4], seed=[3, 3])
    layer.build(x.shape)
    layer.bias.assign([0.5, -1.0, 2.0])
    assert layer.paints_disjoint_cells
    np.testing.assert_allclose(layer(x, blocked=True).numpy(),
                               tf.nn.space_to_depth(layer(x), 8).numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="kernel_size == strides"):
        TransposedConv(3, 4, 2)(x, blocked=True)


def test_transposed_conv_rejects_kernel_smaller_than_stride():
    with pytest.raises(ValueError, match="kernel_size"):
        TransposedConv(3, 2, 4)


def test_layers_serialize_in_a_keras_model(tmp_path):
    inputs = keras.Input((2, 2, 4))
    outputs = TransposedConv(3, 4, 2)(TopK(5)(inputs))
    model = keras.Model(inputs, outputs)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    x = np.random.default_rng(0).normal(size=(2, 2, 2, 4)).astype("float32")
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), atol=1e-6)
