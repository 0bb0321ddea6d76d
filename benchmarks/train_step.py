"""Train-step speed against the machine's own matmul peak, with and without XLA.

    python benchmarks/train_step.py                       # paper-size 64x64, batch 64, L=30
    python benchmarks/train_step.py --batch_sizes=16,64,256 --langevin_steps=10,30,60

For each configuration it reports the median seconds per train step, the analytic FLOPs per
step, (2L + 3) x forward FLOPs x batch (L Langevin steps of forward + backward, then one
forward + backward for the weights: 2L + 3 forward-equivalents, counting a backward as two),
the peak float32 matmul FLOP/s measured in the same run, and the achieved fraction of peak.
The first call (trace + compile) is timed separately. Prints a markdown table.
"""

import statistics
import time

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags

from sparse_gen_tf import AlternatingBackprop, Generator, GeneratorConfig

flags.DEFINE_list("batch_sizes", ["64"], "Batch sizes to time.")
flags.DEFINE_list("langevin_steps", ["30"], "Langevin step counts L to time.")
flags.DEFINE_list("image_sizes", ["64"], "32, 64 or 128 (strides scale the bottom conv).")
flags.DEFINE_list("jit_compile", ["true", "false"], "XLA settings to time.")
flags.DEFINE_integer("repeats", 10, "Timed train steps per configuration.")
flags.DEFINE_integer("peak_size", 2048, "Side of the square matmul that measures the peak.")
FLAGS = flags.FLAGS


def paper_config(image_size):
    """The paper's shape: FC 2x2x256 -> 4x4x128 -> image, bottom kernel = stride = cell."""
    cell = image_size // 4
    return GeneratorConfig(image_size=image_size, latent_dim=100, channels=(256, 128),
                           topk=(64, 128), kernel_sizes=(4, cell), strides=(2, cell))


def forward_flops(config):
    """Multiply-adds x 2 of one example's forward pass: the FC layer and each transposed
    conv counted densely (every input unit paints its k x k x c_out patch)."""
    shapes = config.feature_map_shapes()
    s, c1 = config.top_size, config.channels[0]
    flops = 2 * config.latent_dim * s * s * c1
    out_channels = config.channels[1:] + (3,)
    for (h, w, c), k, c_out in zip(shapes, config.kernel_sizes, out_channels):
        flops += 2 * h * w * c * k * k * c_out
    return flops


def peak_matmul_flops(n, repeats=10):
    """Median FLOP/s of an n x n float32 matmul, the same kernel class the model uses."""
    a = tf.random.normal([n, n])
    b = tf.random.normal([n, n])
    matmul = tf.function(lambda a, b: tf.matmul(a, b))
    matmul(a, b).numpy()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a, b).numpy()
        times.append(time.perf_counter() - start)
    return 2 * n ** 3 / statistics.median(times)


def time_train_step(config, batch_size, langevin_steps, jit_compile, repeats):
    """Returns (first-call seconds, median seconds per step) of AlternatingBackprop."""
    model = AlternatingBackprop(Generator(config), batch_size, langevin_steps=langevin_steps,
                                langevin_step_size=0.3, sigma=0.3)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=jit_compile)
    ids = np.arange(batch_size, dtype=np.int32)
    images = np.random.default_rng(0).uniform(
        -1, 1, (batch_size, config.image_size, config.image_size, 3)).astype(np.float32)
    start = time.perf_counter()
    model.train_on_batch(ids, images)
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.train_on_batch(ids, images)
        times.append(time.perf_counter() - start)
    return first, statistics.median(times)


def main(argv):
    del argv
    peak = peak_matmul_flops(FLAGS.peak_size)
    print(f"peak float32 matmul ({FLAGS.peak_size}^2): {peak / 1e9:.0f} GFLOP/s")
    print("| image | batch | L | XLA | first call s | step s | GFLOP/step | GFLOP/s | of peak |")
    print("|---|---|---|---|---|---|---|---|---|")
    for image_size in map(int, FLAGS.image_sizes):
        config = paper_config(image_size)
        for batch_size in map(int, FLAGS.batch_sizes):
            for steps in map(int, FLAGS.langevin_steps):
                for jit in FLAGS.jit_compile:
                    jit = jit.lower() == "true"
                    first, step = time_train_step(config, batch_size, steps, jit,
                                                  FLAGS.repeats)
                    flops = (2 * steps + 3) * forward_flops(config) * batch_size
                    print(f"| {image_size} | {batch_size} | {steps} | {jit} | {first:.2f} | "
                          f"{step:.4f} | {flops / 1e9:.1f} | {flops / step / 1e9:.0f} | "
                          f"{flops / step / peak:.0%} |", flush=True)


if __name__ == "__main__":
    app.run(main)
