"""Samples of each prior beside the data and the reconstructions, and their sharpness.

    python benchmarks/prior_samples.py --workdir=runs/paper/faces_sparse \\
        [--figure=docs/faces_prior_samples.png] [--num_samples=256]

For any trained run (faces, bricks, parts), prints a markdown table of the sharpness
(`unit_scores.sharpness`: Laplacian energy relative to the training images') of
--num_samples training images, their reconstructions g(z_i) from the persistent chains,
and samples of each prior (model/prior.py; the grammar prior fitted to the run's chains
as its checkpoint holds it, or at load for runs from before the prior was saved), and
the mean pixel distance from each sample to its nearest training image, beside the same
for the reconstructions: a sample that copied a training image would sit at the
reconstructions' distance. --figure writes rows of 8 images, 2x: training images, their
reconstructions, grammar samples, N(0, I) samples.
"""

import os
import sys

import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sparse_gen_tf.data import pipeline
from sparse_gen_tf.explanation import unit_scores
from sparse_gen_tf.explanation.figures import image_grid, write_png
from sparse_gen_tf.explanation.visualize import upscale
from sparse_gen_tf.model import prior as prior_lib
from sparse_gen_tf.training.run import open_run

flags.DEFINE_string("workdir", None, "A training run.", required=True)
flags.DEFINE_integer("num_samples", 256, "Images per row of the table.")
flags.DEFINE_integer("seed", 0, "Seeds the samples.")
flags.DEFINE_string("figure", None, "Also write the figure (module doc) here.")
FLAGS = flags.FLAGS


def nearest_distance(images, data, chunk=64):
    """Mean over images [n, ...] of the RMS pixel distance to the nearest of data [N, ...]."""
    flat = data.reshape(len(data), -1).astype(np.float64)
    best = []
    for start in range(0, len(images), chunk):
        x = images[start:start + chunk].reshape(-1, flat.shape[1]).astype(np.float64)
        d2 = (x ** 2).sum(1)[:, None] - 2 * x @ flat.T + (flat ** 2).sum(1)[None]
        best.append(np.sqrt(np.maximum(d2.min(1), 0) / flat.shape[1]))
    return float(np.concatenate(best).mean())


def main(argv):
    del argv
    opened = open_run(FLAGS.workdir)
    model, n = opened, FLAGS.num_samples
    generator = model.generator
    data = pipeline.to_model_range(opened.data().images).numpy()
    seeds = prior_lib.sample_seeds(n, FLAGS.seed)
    grammar = model.prior
    if grammar.kind != "grammar":
        grammar = prior_lib.BlockGrammarPrior(generator.config)
        grammar.fit(generator, model.chains.numpy(), seed=opened.config.seed)
    chains = model.chains.numpy()
    rows = {"training images": data[:n],
            "reconstructions g(z_i), persistent chains": generator(chains[:n]).numpy(),
            "samples, grammar prior": grammar.sample(generator, seeds)["image"].numpy(),
            "samples, N(0, I)": prior_lib.NormalPrior(generator.config).sample(
                generator, seeds)["image"].numpy()}
    print(f"Run {FLAGS.workdir}, step {opened.step}, K = {list(opened.config.generator.topk)}, "
          f"{len(data)} training images; {n} images per row, seed {FLAGS.seed}.\n")
    print("| images | sharpness (Laplacian energy / data's) | RMS distance to the nearest "
          "training image |\n|---|---|---|")
    for label, images in rows.items():
        distance = "0 (they are)" if label == "training images" else (
            f"{nearest_distance(images, data):.3f}")
        print(f"| {label} | {unit_scores.sharpness(images, data):.3f} | {distance} |")
    if FLAGS.figure:
        shown = np.concatenate([images[:8] for images in rows.values()])
        write_png(FLAGS.figure, upscale(image_grid(shown, columns=8, pad=2), 2))


if __name__ == "__main__":
    app.run(main)
