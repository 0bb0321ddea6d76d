"""The two layer choices of layers.py, timed under XLA against the alternatives.

    python benchmarks/layers.py

* TopK threshold: `top_k(sorted=False)` + `reduce_min` against `top_k(sorted=True)` and
  against the exact bit bisection `kth_largest_by_bisection` (32 passes whose counts
  are matmuls), on the paper-size feature maps [64, 4*4*128] and [64, 2*2*256]. XLA:CPU
  runs top_k as a std::partial_sort of one row after another on one core.
* Transposed conv: `keras.layers.Conv2DTranspose` against `TransposedConv` (one matmul plus
  overlap-add), forward and backward to the input as in a Langevin step, on the paper's
  two layers (2x2x256 -> 4x4x128, kernel 4, stride 2; 4x4x128 -> 64x64x3, kernel 16,
  stride 16), batch 64.

Both sides of each row are timed in the same run, alternating; prints a markdown table of
medians and their ratio.
"""

import statistics
import time

import keras
import tensorflow as tf
from absl import app, flags

from sparse_gen_tf.model.layers import TransposedConv, kth_largest_by_bisection

flags.DEFINE_integer("repeats", 30, "Timed calls per variant.")
FLAGS = flags.FLAGS


def median_seconds(fns, args, repeats):
    """Median seconds per call of each compiled fn, calls interleaved to share the load."""
    for fn in fns:
        fn(*args).numpy()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, bucket in zip(fns, times):
            start = time.perf_counter()
            fn(*args).numpy()
            bucket.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def topk_rows(repeats):
    rows = []
    for n in (4 * 4 * 128, 2 * 2 * 256):
        x = tf.random.normal([64, n])
        k = 128 if n == 2048 else 64

        def threshold(sort):
            return tf.function(lambda x: tf.reduce_min(
                tf.math.top_k(x, k=k, sorted=sort).values, axis=-1), jit_compile=True)

        bisection = tf.function(lambda x: kth_largest_by_bisection(x, k), jit_compile=True)
        sorted_s, unsorted_s, bisection_s = median_seconds(
            [threshold(True), threshold(False), bisection], (x,), repeats)
        rows.append((f"TopK threshold [64, {n}], K={k}", "top_k(sorted=True)", sorted_s,
                     "top_k(sorted=False) + reduce_min", unsorted_s))
        rows.append((f"TopK threshold [64, {n}], K={k}", "top_k(sorted=False) + reduce_min",
                     unsorted_s, "bit bisection, matmul counts", bisection_s))
    return rows


def deconv_rows(repeats):
    rows = []
    for (h, c_in, c_out, k, s) in ((2, 256, 128, 4, 2), (4, 128, 3, 16, 16)):
        x = tf.random.normal([64, h, h, c_in])
        stock = keras.layers.Conv2DTranspose(c_out, k, s, padding="same")
        ours = TransposedConv(c_out, k, s)
        stock.build(x.shape)
        ours.build(x.shape)

        def forward_backward(layer):
            def run(x):
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    y = layer(x)
                    loss = tf.reduce_sum(y * y)
                return tape.gradient(loss, x)
            return tf.function(run, jit_compile=True)

        stock_s, ours_s = median_seconds([forward_backward(stock), forward_backward(ours)],
                                         (x,), repeats)
        rows.append((f"deconv {h}x{h}x{c_in} -> {h * s}x{h * s}x{c_out}, k={k}, s={s}",
                     "Conv2DTranspose", stock_s, "TransposedConv", ours_s))
    return rows


def main(argv):
    del argv
    print("| operation (XLA) | baseline | ms | ours | ms | speed-up |")
    print("|---|---|---|---|---|---|")
    for name, base, base_s, ours, ours_s in topk_rows(FLAGS.repeats) + deconv_rows(
            FLAGS.repeats):
        print(f"| {name} | {base} | {base_s * 1e3:.2f} | {ours} | {ours_s * 1e3:.2f} | "
              f"{base_s / ours_s:.1f}x |", flush=True)


if __name__ == "__main__":
    app.run(main)
