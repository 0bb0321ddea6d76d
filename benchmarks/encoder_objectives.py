"""Which objective trains the inference network q(z | Y) that refines best?

    python benchmarks/encoder_objectives.py --workdir=runs/parts [--steps=1500]

Fits the network of model/encoder.py (default channels) to a trained run by each
objective, from the same initial weights, on the same batches, then infers the held-out
images by its guess followed by R noise-free refinement steps (`inference.amortized`) for
each R of --refine_steps, and prints held-out PSNR and parse accuracy (parts), beside the
library's search (`inference.reconstruct` defaults: 16 chains x 100 Langevin steps from
the best training chains). The objectives, per image:

  chains      ‖E(Y_i) - z_i‖², regression onto the persistent chain z_i
  log_joint   -log p(E(Y), Y) of Eq. (11) (learning/amortized.py, the library's)
  elbo        -ELBO of a Gaussian q = N(μ(Y), diag exp(v(Y))): the likelihood of one
              reparameterised draw plus KL(q ‖ N(0, I)); the guess is μ
  chains+elbo both, the ELBO scaled by 1/100 to the size of the regression
"""

import os
import sys
import time

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sparse_gen_tf.data import pipeline
from sparse_gen_tf.explanation import parts_scores
from sparse_gen_tf.reports import evaluation
from sparse_gen_tf.learning import amortized, inference
from sparse_gen_tf.learning.langevin import langevin
from sparse_gen_tf.model.encoder import Encoder, EncoderConfig
from sparse_gen_tf.training.run import open_run

flags.DEFINE_string("workdir", "runs/parts", "Trained parts run.")
flags.DEFINE_integer("steps", 1500, "Adam steps per objective (batches of 64).")
flags.DEFINE_integer("num_heldout", 256, "Held-out images to score.")
flags.DEFINE_list("objectives", ["chains", "log_joint", "elbo", "chains+elbo"],
                  "Objectives to compare.")
flags.DEFINE_list("refine_steps", ["0", "10", "30", "100"], "Refinement steps R.")
flags.DEFINE_float("refine_step_size", inference.AMORTIZED_STEP_SIZE, "δ of the refinement.")
FLAGS = flags.FLAGS


def loss_fn(objective, generator, encoder, sigma, d):
    """(images, chains, seed) -> mean loss of the objective over the batch."""
    def negative_elbo(out, images, seed):
        mean, log_variance = out[:, :d], tf.clip_by_value(out[:, d:], -12.0, 4.0)
        z = mean + tf.exp(0.5 * log_variance) * tf.random.stateless_normal(tf.shape(mean),
                                                                            seed)
        squared_error = tf.reduce_sum(tf.square(images - generator(z)), [1, 2, 3])
        kl = 0.5 * tf.reduce_sum(tf.square(mean) + tf.exp(log_variance) - log_variance
                                 - 1.0, -1)
        return squared_error / (2.0 * sigma ** 2) + kl

    def loss(images, chains, seed):
        out = encoder(images)
        if objective == "log_joint":
            per_image = amortized.negative_log_joint(generator, out, images, sigma)
        elif objective == "chains":
            per_image = tf.reduce_sum(tf.square(out - chains), -1)
        elif objective == "elbo":
            per_image = negative_elbo(out, images, seed)
        else:
            per_image = (tf.reduce_sum(tf.square(out[:, :d] - chains), -1)
                         + negative_elbo(out, images, seed) / 100.0)
        return tf.reduce_mean(per_image)
    return loss


def main(argv):
    del argv
    opened = open_run(FLAGS.workdir)
    model = opened
    generator, sigma = model.generator, model.langevin.sigma
    data = opened.data()
    train = pipeline.to_model_range(data.images).numpy()
    chains = model.chains.numpy()
    d = chains.shape[1]
    heldout, truth = pipeline.heldout_images(opened.config, FLAGS.num_heldout, data)
    heldout = pipeline.to_model_range(heldout).numpy()
    dominant = parts_scores.dominant_channels(
        parts_scores.bottom_contributions(generator, chains[:512]))
    channel_parts = parts_scores.fit_channel_parts(
        dominant, data.ground_truth.part_labels[:512], generator.config.channels[-1])

    def score(z):
        return evaluation.score_latents(generator, z, heldout, truth.part_labels,
                                        channel_parts)

    refine = {r: tf.function(lambda z, images, r=r: langevin(
        generator, z, images, [0, 0], steps=r, step_size=FLAGS.refine_step_size,
        sigma=sigma, noise=False), jit_compile=True) for r in map(int, FLAGS.refine_steps)}
    rows = []
    start = time.time()
    z = inference.reconstruct(model, heldout).numpy()
    rows.append(("search: 16 chains x 100 steps (library defaults)",
                 {"": score(z)}, time.time() - start))
    for objective in FLAGS.objectives:
        keras.utils.set_random_seed(0)
        gaussian = objective in ("elbo", "chains+elbo")
        encoder = Encoder(EncoderConfig(), latent_dim=2 * d if gaussian else d,
                          image_size=generator.config.image_size)
        optimizer = keras.optimizers.Adam(
            keras.optimizers.schedules.CosineDecay(1e-3, FLAGS.steps, alpha=0.1))
        loss = loss_fn(objective, generator, encoder, sigma, d)

        @tf.function(jit_compile=True)
        def step(images, targets, seed, loss=loss, encoder=encoder, optimizer=optimizer):
            with tf.GradientTape() as tape:
                value = loss(images, targets, seed)
            weights = encoder.trainable_weights
            optimizer.apply(tape.gradient(value, weights), weights)
            return value

        rng = np.random.RandomState(0)
        start = time.time()
        for i in range(FLAGS.steps):
            batch = rng.randint(0, len(train), 64)
            step(tf.constant(train[batch]), tf.constant(chains[batch]), tf.constant([i, 1]))
        guess = encoder(heldout).numpy()[:, :d]
        scores = {f"R = {r}": score(fn(tf.constant(guess), tf.constant(heldout)).numpy())
                  for r, fn in refine.items()}
        rows.append((objective, scores, time.time() - start))

    print(f"Run {FLAGS.workdir} (step {opened.step}); {len(heldout)} held-out images; "
          f"{FLAGS.steps} Adam steps per objective; refinement δ = "
          f"{FLAGS.refine_step_size}. Cells: PSNR (dB) / parse accuracy.\n")
    columns = [f"R = {r}" for r in FLAGS.refine_steps]
    print("| start | " + " | ".join(columns) + " |\n|---|" + "---|" * len(columns))
    for label, scores, _ in rows:
        cells = [f"{scores[c][0]:.2f} / {scores[c][1]:.3f}" if c in scores else ""
                 for c in columns]
        if "" in scores:
            cells = [f"{scores[''][0]:.2f} / {scores[''][1]:.3f}"] + [""] * (len(columns) - 1)
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    app.run(main)
