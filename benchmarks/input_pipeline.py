"""Input pipeline throughput against the train step's: the step must never wait for data.

    python benchmarks/input_pipeline.py [--folder_images=2000] [--batches=200]

For two datasets it reports examples/s of `pipeline.train_dataset` alone (iterated from
Python, which adds per-batch overhead that `fit` does not have, so this understates it)
and of the train step that consumes it:

  * parts: the embedded data at the default settings (config.py: 32x32, batch 64, L = 20).
  * folder: --folder_images JPEG files of CelebA's aligned size (178x218), written to a
    temporary directory, at the paper's 64x64 (batch 64, L = 30). `images.load_folder`
    decodes, crops and resizes them once at startup, so its images/s (reported as
    "decode") is a start-up cost, not a per-step one; training then gathers batches from
    memory like parts.

Prints a markdown table; "headroom" is pipeline examples/s over train-step examples/s.
"""

import os
import statistics
import sys
import tempfile
import time

import numpy as np
import tensorflow as tf
from absl import app, flags

from sparse_gen_tf.training.config import TrainConfig
from sparse_gen_tf.data import images as image_files
from sparse_gen_tf.data import pipeline

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_step import paper_config, time_train_step  # a sibling script

flags.DEFINE_integer("folder_images", 2000, "JPEG files to write, decode and serve.")
flags.DEFINE_integer("batches", 200, "Batches to draw from each pipeline.")
FLAGS = flags.FLAGS  # --repeats, the timed train steps, comes with train_step.py


def pipeline_examples_per_second(data, batch_size, batches):
    """Examples/s of train_dataset(data) over `batches` batches, after a warm-up."""
    dataset = pipeline.train_dataset(data, batch_size, seed=0).repeat()
    iterator = iter(dataset)
    for _ in range(5):  # the shuffle buffer fills and the prefetch thread starts
        next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        ids, images = next(iterator)
    images.numpy()
    return batches * batch_size / (time.perf_counter() - start)


def train_examples_per_second(generator_config, batch_size, langevin_steps, repeats):
    _, times, _ = time_train_step(generator_config, batch_size, langevin_steps, True, repeats)
    return batch_size / statistics.median(times)


def write_jpegs(folder, count, height=218, width=178):
    """count photo-like JPEGs (smooth colour fields plus grain) of CelebA's aligned size."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    for i in range(count):
        a, b, c = rng.uniform(0, 2 * np.pi, 3)
        field = np.stack([np.sin(3 * x + a), np.cos(4 * y + b), np.sin(2 * (x + y) + c)], -1)
        image = 127.5 + 90 * field + rng.normal(0, 12, (height, width, 3))
        data = tf.io.encode_jpeg(np.clip(image, 0, 255).astype(np.uint8), quality=90)
        tf.io.write_file(os.path.join(folder, f"{i:06d}.jpg"), data)


def main(argv):
    del argv
    rows = []
    default = TrainConfig()
    size = default.generator.image_size
    parts = pipeline.load("parts", image_size=size, num_images=default.num_images, seed=0)
    rows.append((f"parts {size}x{size}", None,
                 pipeline_examples_per_second(parts, default.batch_size, FLAGS.batches),
                 train_examples_per_second(default.generator, default.batch_size,
                                           default.langevin.steps, FLAGS.repeats)))

    with tempfile.TemporaryDirectory() as folder:
        write_jpegs(folder, FLAGS.folder_images)
        start = time.perf_counter()
        faces = image_files.load_folder(folder, 64, FLAGS.folder_images)
        decode = len(faces) / (time.perf_counter() - start)
    data = pipeline.TrainingData(faces)
    rows.append((f"{len(faces)} JPEGs 178x218 -> 64x64", decode,
                 pipeline_examples_per_second(data, 64, FLAGS.batches),
                 train_examples_per_second(paper_config(64), 64, 30, FLAGS.repeats)))

    print("| data | decode images/s (once) | pipeline examples/s | train step examples/s "
          "| headroom |")
    print("|---|---|---|---|---|")
    for name, decode, served, trained in rows:
        print(f"| {name} | {'-' if decode is None else f'{decode:.0f}'} | {served:.0f} | "
              f"{trained:.0f} | {served / trained:.0f}x |")


if __name__ == "__main__":
    app.run(main)
