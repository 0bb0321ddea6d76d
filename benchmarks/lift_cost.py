"""What the lift's refinement costs the grammar prior's `sample`, and its fit.

    python benchmarks/lift_cost.py --workdir=runs/geometries3000/overlap_sparse \\
        [--calls=20] [--batches=1,64]

For a trained run whose top layer is sparse enough to lift (K_1 <= prior.MAX_LIFT):
fits the grammar prior as training does (the chains, and the first 1,024 training images
for the check against them), after one untimed fit, twice each, in the order ABBA: with
the pursuit alone
(`lift_refine_steps` = 0) and with its refinement (`prior.refine_lift`), and prints both
fit times. Then, on the refined fit's state switched to its lifted samples, traces
`sample` (tf.function, one trace per variant, as the export traces its `sample`
signature) once with the pursuit alone and once refined, and times each at every batch
size in --batches, the two variants' calls interleaved so that the load of a shared
machine falls on both alike: the median of --calls calls, in ms, and the ratio
refined / pursuit alone.
"""

import os
import sys
import time

import numpy as np
import tensorflow as tf
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sparse_gen_tf.data import pipeline
from sparse_gen_tf.model import prior as prior_lib
from sparse_gen_tf.training.run import open_run

flags.DEFINE_string("workdir", None, "A training run with a sparse top layer.",
                    required=True)
flags.DEFINE_integer("calls", 20, "Timed calls per cell (median).")
flags.DEFINE_list("batches", ["1", "64"], "Batch sizes (rows of seeds) to time.")
FLAGS = flags.FLAGS
MAX_IMAGES = 1024  # the training images the fit checks against, as in training


def main(argv):
    del argv
    opened = open_run(FLAGS.workdir)
    generator, chains = opened.generator, opened.chains.numpy()
    images = pipeline.to_model_range(opened.data().images[:MAX_IMAGES]).numpy()
    variants = {"pursuit alone": 0, "refined": prior_lib.LIFT_REFINE_STEPS}
    priors, fits = {}, {name: [] for name in variants}
    # An untimed fit first (the first builds kernels and thread pools), then the two
    # variants twice, the second time in the other order.
    for name in ["refined", *variants, *reversed(variants)]:
        prior = prior_lib.make("grammar", generator.config)
        if not prior.can_lift:
            raise SystemExit(f"{FLAGS.workdir}: K_1 = {generator.config.topk[0]} is above "
                             f"{prior_lib.MAX_LIFT}, the grammar prior does not lift")
        prior.lift_refine_steps = variants[name]
        start = time.perf_counter()
        prior.fit(generator, chains, seed=opened.config.seed, images=images)
        fits[name].append(time.perf_counter() - start)
        priors[name] = prior
    fits["refined"].pop(0)  # the untimed one
    print(f"{FLAGS.workdir}, step {opened.step}, K_1 = {generator.config.topk[0]}, "
          f"{prior_lib.LIFT_REFINE_STEPS} refinement steps\n")
    print("| | " + " | ".join(variants) + " | ratio |\n|---|---|---|---|")
    print("| fit (s, two runs) | " + " | ".join(
        ", ".join(f"{t:.1f}" for t in fits[name]) for name in variants)
          + f" | {np.median(fits['refined']) / np.median(fits['pursuit alone']):.2f} |")
    # One state for both: only the lift's steps differ between the traced functions.
    prior = priors["refined"]
    prior.lifted.assign(1.0)
    functions = {}
    for name, steps in variants.items():
        prior.lift_refine_steps = steps  # read when traced
        functions[name] = tf.function(
            lambda seeds: prior.sample(generator, seeds)["image"], autograph=False,
            input_signature=[tf.TensorSpec([None], tf.int64)])
        functions[name].get_concrete_function()
    for batch in (int(b) for b in FLAGS.batches):
        seeds = prior_lib.sample_seeds(batch)
        for function in functions.values():  # warm-up
            function(seeds).numpy()
        times = {name: [] for name in variants}
        for _ in range(FLAGS.calls):
            for name, function in functions.items():
                start = time.perf_counter()
                function(seeds).numpy()
                times[name].append(1e3 * (time.perf_counter() - start))
        medians = {name: float(np.median(t)) for name, t in times.items()}
        print(f"| `sample`, batch {batch} (ms) | "
              + " | ".join(f"{medians[name]:.1f}" for name in variants)
              + f" | {medians['refined'] / medians['pursuit alone']:.1f} |")


if __name__ == "__main__":
    app.run(main)
