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
"""

import contextlib
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


if __name__ == "__main__":
    app.run(main)
