"""The exported `reconstruct` against the library's `inference.infer`: quality, latency and
what each export's starting points give away.

    python benchmarks/served_reconstruct.py --workdir=runs/parts [--num_heldout=256]

For each way of starting `reconstruct` (k-means centroids of the training chains, the
default; N(0, I) only, --reconstruct_centroids=0; the training chains themselves,
--export_training_codes) it exports the run to a temporary directory, loads it with
TensorFlow and calls it, as TF Serving would. It prints markdown tables of

* held-out PSNR (and, on parts, parse accuracy) beside `inference.infer`'s defaults, which
  start from the training chains and run batched under XLA in the training process;
* the median latency of a call at batch 1 and 64 (after two warm-up calls);
* the leak: the starting points an export holds, rendered, against the nearest training
  image (median and best PSNR). g(chain) reproduces its own training image; a centroid
  averages at least `serving.MIN_MEMBERS` chains.
"""

import os
import statistics
import sys
import tempfile
import time

import numpy as np
import tensorflow as tf
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sparse_gen_tf import serving
from sparse_gen_tf.reports import evaluation
from sparse_gen_tf.explanation import parts_scores
from sparse_gen_tf.learning import inference
from sparse_gen_tf.data import pipeline
from sparse_gen_tf.training.run import open_run

flags.DEFINE_string("workdir", "runs/parts", "Training run to export and measure.")
flags.DEFINE_integer("num_heldout", 256, "Held-out images to score.")
flags.DEFINE_integer("calls", 5, "Timed calls per latency cell (median).")
FLAGS = flags.FLAGS

STARTS = {  # label -> ReconstructSettings
    "served, centroids (default)": serving.ReconstructSettings(),
    "served, N(0, I) only": serving.ReconstructSettings(centroids=0),
    "served, training codes": serving.ReconstructSettings(training_codes=True),
}


def median_seconds(fn, calls):
    for _ in range(2):  # kernels, thread pools, XLA compilation
        fn()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def psnr_per_image(a, b):
    mse = ((a - b) ** 2).reshape(len(a), -1).mean(1)
    return 10 * np.log10(4.0 / np.maximum(mse, 1e-12))


def nearest_training_psnr(rendered, train):
    """PSNR [M] of each rendered image [M, H, W, 3] against its nearest training image."""
    flat_r, flat_t = rendered.reshape(len(rendered), -1), train.reshape(len(train), -1)
    d2 = ((flat_r ** 2).sum(1)[:, None] - 2 * flat_r @ flat_t.T + (flat_t ** 2).sum(1)[None])
    return psnr_per_image(rendered, train[d2.argmin(1)])


def main(argv):
    del argv
    opened = open_run(FLAGS.workdir)
    model, config = opened, opened.config
    generator, chains = model.generator, model.chains.numpy()
    data = opened.data()
    train = pipeline.to_model_range(data.images).numpy()
    heldout, truth = pipeline.heldout_images(config, FLAGS.num_heldout, data)
    heldout = pipeline.to_model_range(heldout).numpy()
    if not len(heldout):
        sys.exit(f"{FLAGS.workdir} has no held-out images; train with --heldout=N")
    channel_parts = None
    if truth is not None:
        dominant = parts_scores.dominant_channels(
            parts_scores.bottom_contributions(generator, chains[:512]))
        channel_parts = parts_scores.fit_channel_parts(
            dominant, data.ground_truth.part_labels[:512], generator.config.channels[-1])

    def scores(z):
        if channel_parts is None:
            return parts_scores.psnr(heldout, generator(z).numpy()), float("nan")
        return evaluation.score_latents(generator, z, heldout, truth.part_labels,
                                      channel_parts)

    batch_64 = heldout[:64]
    quality, latency, leak = [], [], []
    z = inference.reconstruct(model, heldout).numpy()
    quality.append(("`inference.infer` defaults (training chains, XLA)", *scores(z)))
    latency.append(("`inference.infer` defaults (training chains, XLA)", *[
        median_seconds(lambda b=b: inference.reconstruct(model, b).numpy(), FLAGS.calls)
        for b in (heldout[:1], batch_64)]))
    leak.append(("training chains g(z_i) vs their own images", *np.percentile(
        psnr_per_image(generator(chains).numpy(), train), [50, 100])))
    for label, settings in STARTS.items():
        with tempfile.TemporaryDirectory() as tmp:
            path = serving.export_generator(generator, tmp, settings=settings,
                                           step_size=model.langevin.step_size,
                                           sigma=model.langevin.sigma, chains=chains)
            reconstruct = tf.saved_model.load(path).signatures["reconstruct"]

            def call(images):
                return reconstruct(image=tf.constant(serving.to_unit_range(images)))["z"]

            z = np.concatenate([call(chunk).numpy() for chunk in np.split(
                heldout, range(64, len(heldout), 64))])
            quality.append((label, *scores(z)))
            latency.append((label, *[median_seconds(lambda b=b: call(b).numpy(), FLAGS.calls)
                                     for b in (heldout[:1], batch_64)]))
            bank = settings.bank(chains)
            if bank is not None:
                leak.append((f"{label}: its {len(bank)} starting points", *np.percentile(
                    nearest_training_psnr(generator(bank).numpy(), train), [50, 100])))

    print(f"Run {FLAGS.workdir} ({config.dataset}, K = {list(config.generator.topk)}, step "
          f"{opened.step}, {opened.num_examples} training images); {len(heldout)} held-out "
          f"images; 16 restarts x 100 Langevin steps everywhere.\n")
    print("| inference | held-out PSNR (dB) | parse accuracy |\n|---|---|---|")
    for label, p, a in quality:
        print(f"| {label} | {p:.2f} | {a:.3f} |")
    print("\n| inference | batch 1 (s) | batch 64 (s) | per image at 64 (ms) |\n"
          "|---|---|---|---|")
    for label, one, many in latency:
        print(f"| {label} | {one:.3f} | {many:.2f} | {many / 64 * 1e3:.1f} |")
    print("\n| what the file holds, rendered | median PSNR to nearest training image (dB) "
          "| best (dB) |\n|---|---|---|")
    for label, median, best in leak:
        print(f"| {label} | {median:.1f} | {best:.1f} |")


if __name__ == "__main__":
    app.run(main)
