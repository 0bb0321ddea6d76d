"""The dense Langevin path's two speed-ups compute the same function.

`TransposedConv.unrolled_kernel` makes a layer with a small input map one matmul (the
served graph's form), without the overlap-add of its shifted blocks; `windowed_kernel` is
that matmul without its zero blocks (the training loop's); `Generator.langevin_kernels`
picks them where the whole-layer matrix does no more multiply-adds.
`kth_largest_and_count` hands TopK the count of entries at or above its threshold, so the
mask knows about surplus ties without another pass.
"""

import numpy as np
import pytest
import tensorflow as tf

from sparse_gen_tf import Generator, GeneratorConfig
from sparse_gen_tf.model.layers import (TopK, TransposedConv, kth_largest_and_count,
                                        windows)

# The paper's shape at 16x16: FC 2x2 -> 4x4 (k = 4, s = 2) -> image (k = s = 4).
PAPER_LIKE = GeneratorConfig(image_size=16, latent_dim=6, channels=(8, 6), topk=(5, 12),
                             kernel_sizes=(4, 4), strides=(2, 4))


def xla(function):
    return tf.function(function, jit_compile=True)


# (h, w, c_in, filters, kernel, stride): square and not, a kernel that is not a whole
# number of strides, a 1x1 map, and a 3x3 map that is larger than the m x m blocks.
SHAPES = [(2, 2, 5, 3, 4, 2), (2, 3, 4, 2, 5, 2), (1, 1, 3, 2, 4, 2), (2, 2, 3, 2, 6, 3),
          (3, 3, 2, 2, 4, 2)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("form", ["unrolled_kernel", "windowed_kernel"])
def test_whole_layer_kernels_are_the_same_layer_and_gradients(shape, compiled, form):
    h, w, c_in, filters, k, s = shape
    layer = TransposedConv(filters, k, s)
    layer.build((None, h, w, c_in))
    layer.bias.assign(tf.random.stateless_normal([filters], [1, 2]))
    x = tf.random.stateless_normal([4, h, w, c_in], [3, 4])
    weights = tf.random.stateless_normal([4, h * s, w * s, filters], [5, 6])

    def both(x):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x)
            whole = layer(x, kernel=getattr(layer, form)((h, w, c_in)))
            blocked = layer(x, kernel=layer.matmul_kernel())
            losses = [tf.reduce_sum(tf.sin(out) * weights) for out in (whole, blocked)]
        return whole, blocked, [tape.gradient(loss, [x, layer.kernel, layer.bias])
                                for loss in losses]

    whole, blocked, (grads_w, grads_b) = (xla(both) if compiled else both)(x)
    assert whole.shape == (4, h * s, w * s, filters)
    np.testing.assert_allclose(whole, blocked, rtol=1e-5, atol=1e-5)
    for name, u, b in zip(("x", "kernel", "bias"), grads_w, grads_b):
        assert np.abs(b).max() > 0, name
        np.testing.assert_allclose(u, b, rtol=1e-4, atol=1e-5, err_msg=name)


def test_unrolled_kernel_rows_are_the_units_patches():
    layer = TransposedConv(2, 4, 2)
    layer.build((None, 2, 2, 3))
    matrix = layer.unrolled_kernel((2, 2, 3)).numpy()
    assert matrix.shape == (12, 16, 2)
    for j in range(12):
        one = np.zeros([1, 12], np.float32)
        one[0, j] = 1.0
        alone = layer(tf.reshape(one, [1, 2, 2, 3]), include_bias=False).numpy()
        np.testing.assert_array_equal(matrix[j], alone.reshape(16, 2))


def test_unrolls_only_where_it_does_no_more_work():
    top = TransposedConv(128, 4, 2)        # the paper's 2x2 -> 4x4: 4 cells, m*m = 4 blocks
    assert top.unrolls((2, 2, 256))
    assert not top.unrolls((3, 3, 256))     # 9 cells > 4 blocks: the matrix would do more
    bottom = TransposedConv(3, 16, 16)      # kernel == stride: one block, nothing to add
    assert not bottom.unrolls((4, 4, 128))


def test_windows_of_the_paper_top_layer():
    # 2 -> 4 rows, k = 4, s = 2, pad 1: row 0 only from input row 0, rows 1-2 from both,
    # row 3 only from input row 1.
    assert windows(2, 4, 4, 2) == [((0, 1), (0, 1)), ((0, 2), (1, 3)), ((1, 2), (3, 4))]
    # Disjoint cells (k == s): each output window is one input row's cell.
    assert windows(3, 6, 2, 2) == [((0, 1), (0, 2)), ((1, 2), (2, 4)), ((2, 3), (4, 6))]


def test_windowed_kernel_drops_exactly_the_zero_blocks_of_the_unrolled_one():
    layer = TransposedConv(5, 4, 2)
    layer.build((None, 2, 2, 7))
    unrolled = layer.unrolled_kernel((2, 2, 7)).numpy().reshape(2, 2, 7, 4, 4, 5)
    grid = layer.windowed_kernel((2, 2, 7))
    covered = np.zeros([2, 2, 4, 4], bool)  # (cell, pixel) pairs that some window holds
    for row in grid:
        for b in row:
            (i0, i1), (j0, j1), (p0, p1), (q0, q1) = b.cell_rows, b.cell_cols, b.rows, b.cols
            np.testing.assert_array_equal(
                b.matrix.numpy(),
                unrolled[i0:i1, j0:j1, :, p0:p1, q0:q1].reshape(b.matrix.shape))
            assert not covered[i0:i1, j0:j1, p0:p1, q0:q1].any()  # no pair twice
            covered[i0:i1, j0:j1, p0:p1, q0:q1] = True
    # Every pair left out is a zero block of the unrolled matrix, and the windows do
    # 36 of its 64 (cell, pixel) multiply-add blocks.
    assert not np.abs(unrolled.transpose(0, 1, 3, 4, 2, 5)[~covered]).any()
    assert covered.sum() == 36
    assert np.abs(unrolled.transpose(0, 1, 3, 4, 2, 5)[covered]).max() > 0


def test_langevin_kernels_window_the_top_layer_only():
    generator = Generator(PAPER_LIKE)
    top, bottom = generator.langevin_kernels()
    assert isinstance(top, tuple) and len(top) == 3 and all(len(r) == 3 for r in top)
    assert bottom.shape.rank == 2
    generator.batch_invariant = True  # the served graph: the whole-layer matrix
    assert [k.shape.rank for k in generator.langevin_kernels()] == [3, 2]


@pytest.mark.parametrize("compiled", [False, True])
def test_squared_error_fn_is_the_squared_error_of_g(compiled):
    generator = Generator(PAPER_LIKE)
    for topk in generator.topks:
        topk.bisection = compiled
    images = tf.random.stateless_uniform([5, 16, 16, 3], [7, 8], -1, 1)
    z = tf.random.stateless_normal([5, PAPER_LIKE.latent_dim], [9, 10])

    def both(z):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(z)
            fast = generator.squared_error_fn(images)(z)
            direct = tf.reduce_sum(tf.square(images - generator(z)), [1, 2, 3])
        return fast, direct, tape.gradient(fast, z), tape.gradient(direct, z)

    fast, direct, grad_fast, grad_direct = (xla(both) if compiled else both)(z)
    np.testing.assert_allclose(fast, direct, rtol=1e-5)
    assert np.abs(grad_direct).max() > 0
    np.testing.assert_allclose(grad_fast, grad_direct, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("compiled", [False, True])
def test_kth_largest_and_count_counts_ties(compiled):
    rng = np.random.default_rng(0)
    # Row 0 without ties, rows 1-2 with many values equal to the 5th largest.
    values = np.stack([rng.normal(size=40), np.round(rng.normal(size=40)),
                       np.r_[np.full(10, 3.0), rng.normal(size=30) - 5]]).astype(np.float32)
    run = (xla(lambda v: kth_largest_and_count(v, 5, bisection=True)) if compiled
           else lambda v: kth_largest_and_count(v, 5))
    threshold, count = (t.numpy() for t in run(tf.constant(values)))
    np.testing.assert_array_equal(threshold[:, 0], np.sort(values, 1)[:, -5])
    np.testing.assert_array_equal(count[:, 0], (values >= threshold).sum(1))
    assert count[0, 0] == 5 and count[2, 0] == 10


def test_topk_mask_keeps_exactly_k_when_some_rows_tie_and_others_do_not():
    values = np.stack([np.arange(30, dtype=np.float32), np.full(30, 2.0, np.float32)])
    layer = TopK(7)
    layer.bisection = True
    mask = xla(layer.mask)(tf.constant(values)).numpy()
    np.testing.assert_array_equal(mask.sum(1), [7, 7])
    np.testing.assert_array_equal(np.flatnonzero(mask[0]), np.arange(23, 30))
    np.testing.assert_array_equal(np.flatnonzero(mask[1]), np.arange(7))  # lower indices
