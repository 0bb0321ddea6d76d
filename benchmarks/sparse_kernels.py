"""Can any sparse kernel that TensorFlow offers beat the dense matmul at the paper's K?

    python benchmarks/sparse_kernels.py                 # paper's bottom layer, K = 128
    python benchmarks/sparse_kernels.py --topk=20 --repeats=9

The largest layer of the Langevin loop is the paper's bottom transposed conv (4x4x128 ->
64x64x3, kernel = stride = 16, `celeba.flags`), at batch 64. Its input keeps K = 128 of
the 2,048 units per example after TopK and ReLU, so 94% of the dense matmul's
multiply-adds are by zero. One Langevin step needs its forward (fm_s ⊗ ker, Eq. 3) and
its backward to the input (for ∂/∂z, Eq. 11); this script times that pair, 30 times in a
`tf.while_loop` whose input moves with its own gradient, as the Langevin loop does (so
nothing is loop-invariant), in each form TensorFlow offers:

- dense matmul under XLA (the dense path of the train step) and without XLA (oneDNN);
- an embedding-bag of `tf.gather` + `tf.math.unsorted_segment_sum` (a gather of kernel
  rows per unit and one segment sum per cell; ∂/∂value by autodiff), under XLA, the only
  sparse form XLA compiles, and without it;
- without XLA, `tf.sparse.sparse_dense_matmul` (TensorFlow's SpMM kernel), its gradient
  by autodiff;
- this package's compiled kernels (`model/sparse_kernels.py`: `sparse_rows_matmul`, then
  `masked_matmul_t` of the likelihood's gradient), when they build.

It prints ms per forward + backward pair, the rate on the FLOPs each form really needs
(dense: every unit; sparse: the K kept ones), and the speed-up over the XLA dense matmul.
A sparse form beats dense only when its rate on its own FLOPs exceeds the dense rate
times K / (h*w*c) (6.25% at the paper's point); the "rate needed" column is that bar.
"""

import statistics
import time

import numpy as np
import tensorflow as tf
from absl import app, flags

from sparse_gen_tf.model import sparse_kernels as kernels_lib
from sparse_gen_tf.model.layers import TopK, TransposedConv

flags.DEFINE_integer("batch_size", 64, "Examples per batch.")
flags.DEFINE_integer("topk", 128, "K of the bottom map (paper: 128 of 4x4x128).")
flags.DEFINE_integer("steps", 30, "Forward + backward pairs per timed loop (L).")
flags.DEFINE_integer("repeats", 7, "Timed loops per form (best and median reported).")
FLAGS = flags.FLAGS

H, C_IN, CELL = 4, 128, 16  # the paper's bottom layer: 4x4x128 -> 64x64x3


def squared_error(logits, target):
    """‖target - tanh(logits)‖² / 2: the likelihood of Eq. (11), whose gradient depends on
    the forward pass (a linear loss would let XLA hoist the whole backward out of the
    loop)."""
    return 0.5 * tf.reduce_sum(tf.square(target - tf.tanh(logits)))


def loop(pair, start, steps, jit_compile):
    """A compiled function running `steps` (forward, backward) pairs, each input moved by
    1e-3 x its own gradient. pair(x) -> (image-sized output, gradient like x)."""
    def run(x):
        def body(t, x):
            _, grad = pair(x)
            return t + 1, x + 1e-3 * grad
        return tf.while_loop(lambda t, x: t < steps, body, (0, x), maximum_iterations=steps)[1]
    return tf.function(run, jit_compile=jit_compile), start


def forms(batch, k, seed=0):
    """{name: (compiled loop, its start input, FLOPs of one pair)}."""
    rng = np.random.default_rng(seed)
    deconv = TransposedConv(3, CELL, CELL, name="bottom")
    deconv.build((None, H, H, C_IN))
    fm = tf.constant(rng.standard_normal([batch, H, H, C_IN]).astype(np.float32))
    # The kept set of the paper's TopK; ReLU then zeroes about half of it, but the sparse
    # forms keep all K slots (static shapes).
    mask = TopK(k).mask(fm)
    values, indices = tf.math.top_k(tf.reshape(fm, [batch, -1]), k)  # no ties: normal draws
    target = tf.constant(rng.uniform(-1, 1, [batch, H, H, CELL * CELL * 3]).astype(np.float32))
    kernel = deconv.matmul_kernel()  # [c_in, s*s*3], the matmul layout of the dense path
    n = H * H * C_IN
    dense_flops = 2 * 2 * batch * n * CELL * CELL * 3
    sparse_flops = 2 * 2 * batch * k * CELL * CELL * 3

    def dense_pair(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = deconv(x * mask, kernel=kernel, blocked=True, include_bias=False)
            loss = squared_error(out, target)
        return out, tape.gradient(loss, x)

    # Row (example, cell) and column (channel) of every kept unit, for SpMM.
    rows = tf.reshape(indices // C_IN + H * H * tf.range(batch)[:, None], [-1])
    cols = tf.reshape(indices % C_IN, [-1])
    sparse_index = tf.cast(tf.stack([rows, cols], -1), tf.int64)
    flat_target = tf.reshape(target, [batch * H * H, -1])

    def spmm_pair(v):
        with tf.GradientTape() as tape:
            tape.watch(v)
            code = tf.SparseTensor(sparse_index, tf.reshape(v, [-1]), [batch * H * H, C_IN])
            out = tf.sparse.sparse_dense_matmul(code, kernel)
            loss = squared_error(out, flat_target)
        return out, tape.gradient(loss, v)

    def bag_pair(v):
        with tf.GradientTape() as tape:
            tape.watch(v)
            painted = tf.gather(kernel, cols) * tf.reshape(v, [-1, 1])
            out = tf.math.unsorted_segment_sum(painted, rows, batch * H * H)
            loss = squared_error(out, flat_target)
        return out, tape.gradient(loss, v)

    likelihood_grad = tf.function(  # ∂ squared_error / ∂logits, as one XLA function
        lambda out: -(flat_target - tf.tanh(out)) * (1.0 - tf.square(tf.tanh(out))),
        jit_compile=True)
    flat_mask = tf.reshape(mask, [batch * H * H, C_IN])

    def compiled_pair(x):  # x: the masked map as rows [batch*16, 128]
        out = kernels_lib.sparse_rows_matmul(x, kernel)
        return out, kernels_lib.masked_matmul_t(likelihood_grad(out), kernel, flat_mask)

    forms_ = {
        "dense matmul, XLA (the train step's dense path)": (
            *loop(dense_pair, fm, FLAGS.steps, True), dense_flops),
        "dense matmul, no XLA (oneDNN)": (*loop(dense_pair, fm, FLAGS.steps, False), dense_flops),
        "gather + unsorted_segment_sum, XLA": (
            *loop(bag_pair, values, FLAGS.steps, True), sparse_flops),
        "tf.sparse.sparse_dense_matmul, no XLA": (
            *loop(spmm_pair, values, FLAGS.steps, False), sparse_flops),
        "gather + unsorted_segment_sum, no XLA": (
            *loop(bag_pair, values, FLAGS.steps, False), sparse_flops),
    }
    if kernels_lib.unavailable_reason() is None:
        forms_["compiled sparse kernels (--sparse_kernels), no XLA but the tanh"] = (
            *loop(compiled_pair, tf.reshape(fm * mask, [batch * H * H, C_IN]), FLAGS.steps,
                  False), sparse_flops)
    return forms_


def main(argv):
    del argv
    batch, k = FLAGS.batch_size, FLAGS.topk
    table = forms(batch, k)
    times = {name: [] for name in table}
    for name, (fn, start, _) in table.items():
        fn(start).numpy()  # trace + compile
    for _ in range(FLAGS.repeats):  # the forms alternate, so all see the same load
        for name, (fn, start, _) in table.items():
            begin = time.perf_counter()
            fn(start).numpy()
            times[name].append((time.perf_counter() - begin) / FLAGS.steps)
    n = H * H * C_IN
    dense_name = next(iter(table))
    dense_best = min(times[dense_name])
    dense_rate = table[dense_name][2] / dense_best
    print(f"\nbottom layer {H}x{H}x{C_IN} -> {H * CELL}x{H * CELL}x3, batch {batch}, "
          f"K = {k} of {n} ({k / n:.2%}); one forward + backward to the input, "
          f"{FLAGS.steps} per loop, best of {FLAGS.repeats}\n")
    print("| form | ms per pair (best / median) | GFLOP/s on its own FLOPs | "
          "rate needed to beat the XLA dense matmul | speed-up over it |\n|---|---|---|---|---|")
    for name, (_, _, flops) in table.items():
        best = min(times[name])
        needed = dense_rate * flops / table[dense_name][2]
        print(f"| {name} | {best * 1e3:.3f} / {statistics.median(times[name]) * 1e3:.3f} | "
              f"{flops / best / 1e9:.1f} | {needed / 1e9:.1f} | {dense_best / best:.2f}x |",
              flush=True)


if __name__ == "__main__":
    app.run(main)
