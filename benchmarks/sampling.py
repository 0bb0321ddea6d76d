"""How often samples are legal derivations of the parts grammar, for ways of drawing them.

    python benchmarks/sampling.py --workdir=runs/parts [--num_samples=512]

On a trained parts run, each row draws --num_samples images in another way and scores
them with `parts_scores.grammar_validity` (legal quadrants, clean cells):

  prior            z ~ N(0, I), the paper's prior (what `sample` serves)
  prior, rescaled  N(0, I) scaled to the chains' mean norm
  gaussian         a full-covariance Gaussian fitted to the persistent chains
  mixture          k-means clusters of the chains (each >= 8 chains), a full-covariance
                   Gaussian per cluster, weighted by cluster size
  grammar          the induced And-Or grammar, top layer: each top AND node (a cell of
                   the top feature map) takes its OR nodes (surviving units and their
                   coefficients) from the parse of an independently drawn training
                   image, and the rest of the network renders it (TopK included)
  quadrants        the grammar one level up: each quadrant of the bottom feature map (its
                   2x2 AND nodes with their OR nodes) copied from another training parse,
                   painted by the bottom kernels; close to pasting training quadrants
  chains           the persistent chains themselves: the ceiling at this budget
  data             the training images: the control

The fitted rows are ex-post densities (Ghosh et al., 2020); none is used by the package
yet. Prints a markdown table.
"""

import os
import sys

import numpy as np
import tensorflow as tf
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sparse_gen_tf.explanation import parts_scores
from sparse_gen_tf.learning import inference
from sparse_gen_tf.data import pipeline
from sparse_gen_tf.training.run import load_run

flags.DEFINE_string("workdir", "runs/parts", "A training run on --dataset=parts.")
flags.DEFINE_integer("num_samples", 512, "Images per row.")
flags.DEFINE_integer("seed", 0, "Seeds every draw.")
FLAGS = flags.FLAGS


def render_top(generator, top):
    """g from the top feature map [n, h, w, c] (before its TopK) down: Eq. (1) per layer."""
    fm = tf.convert_to_tensor(top, tf.float32)
    for topk, deconv in zip(generator.topks, generator.deconvs):
        fm = deconv(tf.nn.relu(topk(fm)))
    return tf.tanh(fm).numpy()


def recombine_quadrants(generator, chains, rng, n):
    """Images whose bottom feature map takes each quadrant (half the AND nodes per side)
    from the parse of an independently drawn training image, painted by the last deconv."""
    bottom = generator.parse(chains)["activations"][-1].numpy()  # [N, h, w, c]
    half = bottom.shape[1] // 2
    donors = rng.randint(len(chains), size=(n, 2, 2))
    recombined = np.zeros((n,) + bottom.shape[1:], np.float32)
    for a in range(2):
        for b in range(2):
            block = (slice(a * half, (a + 1) * half), slice(b * half, (b + 1) * half))
            recombined[:, block[0], block[1]] = bottom[donors[:, a, b]][:, block[0], block[1]]
    return tf.tanh(generator.deconvs[-1](recombined)).numpy()


def mixture(chains, rng, n):
    centroids = inference.chain_centroids(chains, 64, min_members=8, seed=FLAGS.seed)
    labels = ((chains[:, None] - centroids[None]) ** 2).sum(-1).argmin(1)
    sizes = np.bincount(labels, minlength=len(centroids))
    draws = rng.choice(len(centroids), size=n, p=sizes / sizes.sum())
    d = chains.shape[1]
    z = np.empty((n, d))
    for c in np.unique(draws):
        members = chains[labels == c]
        covariance = np.cov(members.T) + 1e-3 * np.eye(d)
        z[draws == c] = rng.multivariate_normal(members.mean(0), covariance,
                                                int((draws == c).sum()))
    return z, len(centroids)


def main(argv):
    del argv
    opened = load_run(FLAGS.workdir)
    generator, chains = opened.model.generator, opened.model.chains.numpy()
    data = opened.data()
    if data.ground_truth is None:
        sys.exit(f"{FLAGS.workdir} is not a parts run: the scores need its grammar")
    truth, n, d = data.ground_truth, FLAGS.num_samples, chains.shape[1]
    rng = np.random.RandomState(FLAGS.seed)
    norm = np.linalg.norm(chains, axis=1).mean()
    mixed, clusters = mixture(chains, rng, n)
    top = generator.parse(chains)["activations"][0].numpy()  # [N, h, w, c], survivors
    h, w = top.shape[1:3]
    donors = rng.randint(len(chains), size=(n, h, w))
    recombined = top[donors, np.arange(h)[None, :, None], np.arange(w)[None, None, :]]
    rows = [
        ("prior, z ~ N(0, I)", generator(rng.standard_normal((n, d))).numpy()),
        (f"prior rescaled to the chains' mean norm ({norm:.1f} vs {np.sqrt(d):.1f})",
         generator(rng.standard_normal((n, d)) * norm / np.sqrt(d)).numpy()),
        ("full-covariance Gaussian fitted to the chains", generator(rng.multivariate_normal(
            chains.mean(0), np.cov(chains.T), n)).numpy()),
        (f"mixture of {clusters} Gaussians on k-means clusters of the chains",
         generator(mixed).numpy()),
        ("grammar: each top AND node's OR nodes from another training parse",
         render_top(generator, recombined)),
        ("quadrants: each bottom 2x2 block of AND nodes from another training parse",
         recombine_quadrants(generator, chains, rng, n)),
        ("the persistent chains (ceiling)", generator(chains[:n]).numpy()),
        ("the training images (control)", pipeline.to_model_range(data.images[:n]).numpy()),
    ]
    print(f"Run {FLAGS.workdir}, step {opened.step}, K = {list(opened.config.generator.topk)}; "
          f"{n} images per row, seed {FLAGS.seed}.\n")
    print("| samples from | legal quadrants | clean cells |\n|---|---|---|")
    for label, images in rows:
        validity, clean = parts_scores.grammar_validity(images, truth)
        print(f"| {label} | {validity:.3f} | {clean:.3f} |")


if __name__ == "__main__":
    app.run(main)
