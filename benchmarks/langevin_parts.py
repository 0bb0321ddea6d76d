"""Where the dense Langevin loop's time goes: the loop with parts taken out.

    python benchmarks/langevin_parts.py                 # paper point, XLA, repeats 7

Times the paper-size Langevin chain alone (`langevin.langevin`, batch 64, L = 30,
celeba.flags' architecture, the train step's XLA dense path with the bisection TopK) and
the same chain with, traced in:

- "TopK masks = 1": every TopK mask replaced by ones (the ReLU stays), so the matmuls are
  unchanged and the bisections are gone;
- "tanh = identity": the output nonlinearity removed;
- both removed: what is left is the matmuls, the residual and a few element-wise ops.

These variants compute other functions; they only measure what each part costs. Against
them, the matmul FLOPs the loop executes (`sparse_path.executed_forward_flops`, forward +
backward to z per step) divided by a 4096² float32 matmul timed in the same window give
the loop's floor: the time if every matmul ran at the peak and nothing else took time.
Last, each matmul shape of the loop timed alone (30 dependent products in one XLA loop):
what the loop's matmuls take at their own rates, against the floor.
"""

import collections
import contextlib
import math
import statistics
import time
from unittest import mock

import tensorflow as tf
from absl import app, flags

from sparse_path import executed_forward_flops
from train_step import matmul_timer, paper_config

from sparse_gen_tf import Generator
from sparse_gen_tf.learning.langevin import langevin
from sparse_gen_tf.model.layers import TopK

FLAGS = flags.FLAGS
# train_step's flags apply: --repeats (timed chains per variant, the variants alternating),
# and the first entry of --batch_sizes and --langevin_steps.
FLAGS.set_default("repeats", 7)

VARIANTS = {
    "full loop (the train step's)": (),
    "TopK masks = 1": ("topk",),
    "tanh = identity": ("tanh",),
    "both removed (matmuls, residual, ReLU)": ("topk", "tanh"),
}


def chain(generator, z, images, steps, removed):
    """A compiled Langevin chain, traced with the parts in `removed` patched out."""
    def run(z):
        return langevin(generator, z, images, tf.constant([1, 2]), steps=steps,
                        step_size=0.3, sigma=0.3)
    fn = tf.function(run, jit_compile=True)
    with contextlib.ExitStack() as patches:
        if "topk" in removed:
            patches.enter_context(
                mock.patch.object(TopK, "mask", lambda self, x: tf.ones_like(x)))
        if "tanh" in removed:
            patches.enter_context(mock.patch.object(tf, "tanh", tf.identity))
        fn.get_concrete_function(z)  # traces now, inside the patches
    fn(z).numpy()  # compiles
    return fn


def loop_matmuls(generator, batch):
    """Counter of the matmul shapes (m, k, n) that one Langevin step runs, forward and
    backward to the input, read off the kernels the loop uses (`langevin_kernels`)."""
    cfg = generator.config
    top = cfg.top_size ** 2 * cfg.channels[0]
    shapes = collections.Counter({(batch, cfg.latent_dim, top): 1, (batch, top, cfg.latent_dim): 1})
    for kernel, (h, w, _) in zip(generator.langevin_kernels(), cfg.feature_map_shapes()):
        if isinstance(kernel, tuple):
            matrices = [(batch, *b.matrix.shape) for row in kernel for b in row]
        elif kernel.shape.rank == 3:
            matrices = [(batch, kernel.shape[0], kernel.shape[1] * kernel.shape[2])]
        else:
            matrices = [(batch * h * w, *kernel.shape)]
        for m, k, n in matrices:
            shapes[(m, k, n)] += 1
            shapes[(m, n, k)] += 1
    return shapes


def matmul_rate(m, k, n, steps, repeats):
    """GFLOP/s of an [m, k] x [k, n] float32 matmul alone, as `steps` dependent matmuls in
    one XLA loop (each input moved by the previous product, as in the Langevin loop)."""
    a = tf.random.stateless_normal([m, k], [0, 3])
    b = tf.random.stateless_normal([k, n], [0, 4])

    @tf.function(jit_compile=True)
    def run(a):
        def body(t, x):
            return t + 1, x + 1e-6 * tf.reduce_sum(tf.matmul(x, b))
        return tf.while_loop(lambda t, x: t < steps, body, (0, a), maximum_iterations=steps)[1]
    run(a).numpy()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run(a).numpy()
        best = min(best, time.perf_counter() - start)
    return 2 * m * k * n * steps / best


def main(argv):
    del argv
    batch, steps = int(FLAGS.batch_sizes[0]), int(FLAGS.langevin_steps[0])
    config = paper_config(64)
    generator = Generator(config)
    for topk in generator.topks:
        topk.bisection = True  # as AlternatingBackprop.compile sets it under XLA on CPU
    z = tf.random.stateless_normal([batch, config.latent_dim], [0, 1])
    images = tf.random.stateless_uniform([batch, 64, 64, 3], [0, 2], -1.0, 1.0)
    chains = {name: chain(generator, z, images, steps, removed)
              for name, removed in VARIANTS.items()}
    matmul = matmul_timer(4096)
    times = {name: [] for name in chains}
    matmuls = []
    for _ in range(FLAGS.repeats):
        for name, fn in chains.items():
            start = time.perf_counter()
            fn(z).numpy()
            times[name].append(time.perf_counter() - start)
            matmuls.append(matmul())
    peak = 2 * 4096 ** 3 / min(matmuls)
    flops = 2 * steps * executed_forward_flops(generator) * batch
    floor = flops / peak
    full = min(times[next(iter(chains))])
    print(f"\nLangevin chain, batch {batch}, L = {steps}, XLA; the matmuls "
          f"execute {flops / 1e9:.1f} GFLOP; peak (4096² matmul, same window) "
          f"{peak / 1e9:.0f} GFLOP/s, floor {floor:.4f} s\n")
    print("| variant | chain s (best / median) | share of the full loop | x floor |\n"
          "|---|---|---|---|")
    for name in chains:
        best = min(times[name])
        print(f"| {name} | {best:.4f} / {statistics.median(times[name]):.4f} | "
              f"{best / full:.0%} | {best / floor:.2f} |", flush=True)
    # Each matmul shape of the loop alone: what the matmuls would take at their own rates.
    print("\n| matmul [m, k] x [k, n] | per Langevin step | GFLOP/s alone | of peak |\n"
          "|---|---|---|---|")
    alone = 0.0
    for (m, k, n), count in sorted(loop_matmuls(generator, batch).items(),
                                   key=lambda item: -math.prod(item[0])):
        rate = matmul_rate(m, k, n, steps, FLAGS.repeats)
        alone += count * steps * 2 * m * k * n / rate
        print(f"| [{m}, {k}] x [{k}, {n}] | {count} | {rate / 1e9:.0f} | {rate / peak:.0%} |",
              flush=True)
    print(f"\nThe loop's matmuls at those rates: {alone:.4f} s per chain "
          f"({alone / floor:.2f}x the floor)")


if __name__ == "__main__":
    app.run(main)
