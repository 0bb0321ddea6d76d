"""The paper-size train step under XLA CPU backend options.

    python benchmarks/xla_cpu_flags.py                      # default vs oneDNN vs old runtime
    python benchmarks/xla_cpu_flags.py --rounds=5 --steps=5

XLA reads XLA_FLAGS once per process, so every variant runs in its own fresh process,
and the variants alternate over --rounds rounds, so that they see the same load. Each
process:

* compiles the dense paper-size step (64x64, batch 64, L = 30, celeba.flags'
  architecture) and times --steps steps, each followed by a 4096² float32 matmul
  (TensorFlow's own kernel, not XLA's, so that the options do not move the peak);
* sums the chains after the steps, a checksum that tells whether an option changed the
  numbers;
* times the step's four matmul shapes alone, each as 30 dependent matmuls in one
  compiled loop, as the Langevin loop runs them;
* digests XLA's optimized HLO of a Langevin chain: an option that swaps the dots for
  oneDNN or XNNPACK kernels changes it (they are custom calls).

The table gives, per variant, the median over rounds of the best step, its
dense-equivalent FLOP/s as a fraction of the peak from the same process, its speed-up
over the default variant's step in the same round (above 1: faster), and the four
matmuls' rates.
"""

import collections
import os
import statistics
import subprocess
import sys

from absl import app, flags

flags.DEFINE_integer("rounds", 3, "Fresh processes per variant, alternating.")
flags.DEFINE_integer("steps", 5, "Timed train steps per process.")
flags.DEFINE_list("variants", ["default", "onednn", "no_thunks", "xnn_dot", "onednn_dot"],
                  "Which of the VARIANTS below to time; 'default' first gives the ratio "
                  "column.")
flags.DEFINE_string("probe", None, "Internal: the XLA_FLAGS of this (fresh) process was "
                    "set for this variant; time it, print one line and exit.")
FLAGS = flags.FLAGS

VARIANTS = {  # name -> XLA_FLAGS
    "default": "",
    "onednn": "--xla_cpu_use_onednn=true",
    "no_thunks": "--xla_cpu_use_thunk_runtime=false",
    "xnn_dot": "--xla_cpu_experimental_xnn_fusion_type=dot",
    "onednn_dot": "--xla_cpu_experimental_onednn_fusion_type=dot",
}
PEAK_SIZE = 4096

# What one probe process measured: its best step and best peak matmul (s), the step's
# dense-equivalent FLOPs, the chains' checksum, the LOOP_MATMULS rates (GFLOP/s) and the
# optimized HLO's digest and custom-call count.
Probe = collections.namedtuple(
    "Probe", "best peak flops checksum rates digest custom_calls")


def probe(repeats):
    """Prints one RESULT line, a `Probe` (same seed and steps in every process, so equal
    checksums mean the option left the arithmetic alone)."""
    import time

    import numpy as np

    from train_step import forward_flops, matmul_timer, paper_config, step_setup
    import keras
    keras.utils.set_random_seed(0)  # the same weights in every process
    config = paper_config(64)
    matmul = matmul_timer(PEAK_SIZE)
    model, ids, images = step_setup(config, 64, 30, jit_compile=True, sparse_kernels=False)
    model.train_on_batch(ids, images)  # trace + compile
    times, matmuls = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        model.train_on_batch(ids, images)
        times.append(time.perf_counter() - start)
        matmuls.append(matmul())
    flops = (2 * 30 + 3) * forward_flops(config) * 64
    check = float(np.abs(model.chains.numpy()).sum())
    rates = " ".join(f"{rate:.1f}" for rate in loop_matmul_rates())
    digest, custom_calls = optimized_hlo(model.generator, images)
    print(f"RESULT {digest} {custom_calls} {min(times):.5f} {min(matmuls):.5f} {flops:.6e} "
          f"{check:.9e} {rates}")


def optimized_hlo(generator, images):
    """(digest of XLA's optimized HLO of a paper-size Langevin chain, its number of
    custom calls): an option that routes the dots to oneDNN or XNNPACK shows up in both
    (its kernels are custom calls), one that changes only the runtime in neither."""
    import hashlib

    import tensorflow as tf

    from sparse_gen_tf.learning.langevin import langevin
    chain = tf.function(lambda z, y: langevin(generator, z, y, tf.constant([0, 1]), steps=30,
                                              step_size=0.3, sigma=0.3), jit_compile=True)
    z = tf.zeros([images.shape[0], generator.config.latent_dim])
    hlo = chain.experimental_get_compiler_ir(z, tf.constant(images))(stage="optimized_hlo")
    # Names carry the process's unique ids; the digest is of the text without metadata.
    text = "\n".join(line.split(", metadata=")[0] for line in hlo.splitlines())
    return hashlib.sha1(text.encode()).hexdigest()[:10], hlo.count("custom-call(")


# The four matmuls of a paper-size Langevin step, [M, K] x [K, N]: the unrolled top layer
# forward and backward to its input, the bottom layer's cells forward and backward.
LOOP_MATMULS = ((64, 1024, 2048), (64, 2048, 1024), (1024, 128, 768), (1024, 768, 128))


def loop_matmul_rates(steps=30, repeats=5):
    """GFLOP/s of each LOOP_MATMULS shape under XLA, as the Langevin loop runs it: `steps`
    dependent matmuls in one compiled tf.while_loop, best of `repeats` calls."""
    import time

    import tensorflow as tf
    rates = []
    for m, k, n in LOOP_MATMULS:
        a, b = tf.random.normal([m, k]), tf.random.normal([k, n])

        @tf.function(jit_compile=True)
        def loop(a, b):
            def body(i, x):  # x makes each matmul depend on the one before
                return i + 1, x + 1e-6 * tf.reduce_sum(tf.matmul(a + x, b))
            return tf.while_loop(lambda i, x: i < steps, body, (0, tf.zeros([])))[1]
        loop(a, b).numpy()
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            loop(a, b).numpy()
            best = min(best, time.perf_counter() - start)
        rates.append(2 * m * k * n * steps / best / 1e9)
    return rates


def run_variant(name, repeats):
    env = {**os.environ, "XLA_FLAGS": VARIANTS[name], "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run([sys.executable, __file__, f"--probe={name}",
                             f"--steps={repeats}"], capture_output=True, text=True, env=env)
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT")]
    if result.returncode or not lines:
        tail = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise SystemExit(f"variant {name} ({VARIANTS[name]}) failed: {tail}")
    digest, custom_calls, *numbers = lines[-1].split()[1:]
    best, peak, flops, check, *rates = map(float, numbers)
    return Probe(best, peak, flops, check, rates, digest, int(custom_calls))


def main(argv):
    del argv
    if FLAGS.probe:
        probe(FLAGS.steps)
        return
    unknown = set(FLAGS.variants) - set(VARIANTS)
    if unknown:
        raise SystemExit(f"unknown --variants {sorted(unknown)}; choose from {sorted(VARIANTS)}")
    rows = {name: [] for name in FLAGS.variants}
    for round_ in range(FLAGS.rounds):
        for name in FLAGS.variants:
            r = run_variant(name, FLAGS.steps)
            rows[name].append(r)
            print(f"round {round_ + 1} {name}: best {r.best:.4f} s, peak "
                  f"{2 * PEAK_SIZE ** 3 / r.peak / 1e9:.0f} GFLOP/s, of peak "
                  f"{of_peak(r):.0%}, checksum {r.checksum:.9e}, optimized HLO {r.digest} "
                  f"({r.custom_calls} custom calls), loop matmuls "
                  f"{' '.join(f'{rate:.0f}' for rate in r.rates)} GFLOP/s", flush=True)
    shapes = " | ".join("x".join(map(str, shape)) for shape in LOOP_MATMULS)
    print("\n| variant | XLA_FLAGS | step s (median of bests) | of peak (median) | "
          f"speed-up over default, same round (median) | {shapes} (GFLOP/s, median) | "
          "optimized HLO (custom calls) | chains checksum |\n"
          "|---|---|---|---|---|" + "---|" * (len(LOOP_MATMULS) + 2))
    base = rows.get("default")
    for name, results in rows.items():
        rates = " | ".join(f"{statistics.median(r.rates[i] for r in results):.0f}"
                           for i in range(len(LOOP_MATMULS)))
        ratio = (f"{statistics.median(b.best / r.best for b, r in zip(base, results)):.2f}x"
                 if base and name != "default" else "")
        print(f"| {name} | `{VARIANTS[name] or '(none)'}` | "
              f"{statistics.median(r.best for r in results):.4f} | "
              f"{statistics.median(of_peak(r) for r in results):.0%} | {ratio} | {rates} | "
              f"{', '.join(sorted({f'{r.digest} ({r.custom_calls})' for r in results}))} | "
              f"{', '.join(sorted({f'{r.checksum:.6e}' for r in results}))} |")


def of_peak(r):
    """The step's dense-equivalent FLOP/s as a fraction of its process's best matmul."""
    return r.flops / r.best / (2 * PEAK_SIZE ** 3 / r.peak)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    app.run(main)
