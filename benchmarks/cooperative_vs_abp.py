"""Does the descriptor (§2.4) make the generator sharper? ABP alone against cooperative
learning, trained with the same budget, seed and default flags.

    python benchmarks/cooperative_vs_abp.py --train   # trains both runs if needed, then:
    python benchmarks/cooperative_vs_abp.py           # measures runs/abp and runs/coop

--train runs, one after the other (resuming if a run is incomplete):

    python train.py --workdir=runs/abp
    python train.py --workdir=runs/coop --descriptor

Prints a markdown table, one row per run, of
  - recon PSNR: PSNR of g(z_i) against training image i, z_i the final persistent chains
    (the training-set reconstruction the last epoch ended with, under the final θ);
  - sharpness of reconstructions g(z_i) and of samples g(z), z ~ N(0, I), relative to the
    training data (1.0 = as sharp as the data, < 1 blurrier):
      laplacian: mean squared 3x3 Laplacian, E[(∇²Y)²];
      hf power:  spectral power at radial frequencies above half Nyquist (> 0.25
                 cycles/pixel), per-image mean removed;
  - for the cooperative run, also the descriptor-revised samples Ỹ (its Langevin from
    g(z)), to show what the generator was taught.

Its results (the 3,008-step comparison, the 640-step ablation of the data weight and the
reference s, and the earlier runs that diverged) are in README.md, "Cooperative learning
with a descriptor".
"""

import os
import subprocess
import sys

import numpy as np
import tensorflow as tf
from absl import app, flags

from sparse_gen_tf.training import run
from sparse_gen_tf.learning.abp import psnr
from sparse_gen_tf.data import pipeline
from sparse_gen_tf.explanation.figures import image_grid, write_png

flags.DEFINE_string("abp_workdir", "runs/abp", "Workdir of the ABP run.")
flags.DEFINE_string("coop_workdir", "runs/coop", "Workdir of the --descriptor run.")
flags.DEFINE_boolean("train", False, "Train (or finish) both runs first, one after the other.")
flags.DEFINE_multi_string("train_flag", [], "An extra train.py flag for both runs, "
                          "repeatable (e.g. --train_flag=--train_steps=320 for a quick look).")
flags.DEFINE_integer("num_samples", 1024, "Samples g(z), z ~ N(0, I), to measure.")
flags.DEFINE_string("figure", None, "Also write a PNG here: rows of samples g(z) (the same "
                    "z for both runs), then reconstructions g(z_i), ABP above cooperative, "
                    "then the training images.")
FLAGS = flags.FLAGS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAPLACIAN = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], np.float32)


def mean_squared_laplacian(images):
    """E[(∇²Y)²] over images [N, H, W, C] in [-1, 1], each channel separately."""
    images = tf.convert_to_tensor(images, tf.float32)
    channels = images.shape[-1]
    kernel = tf.tile(LAPLACIAN[:, :, None, None], [1, 1, channels, 1])
    return float(tf.reduce_mean(tf.square(
        tf.nn.depthwise_conv2d(images, kernel, [1, 1, 1, 1], "VALID"))))


def high_frequency_power(images):
    """Mean spectral power above half Nyquist of images [N, H, W, C] (per-image mean out)."""
    images = np.asarray(images, np.float64)
    images = images - images.mean(axis=(1, 2), keepdims=True)
    power = np.abs(np.fft.fft2(images, axes=(1, 2))) ** 2 / (images.shape[1] * images.shape[2])
    fy = np.fft.fftfreq(images.shape[1])[:, None]
    fx = np.fft.fftfreq(images.shape[2])[None, :]
    high = np.sqrt(fx ** 2 + fy ** 2) > 0.25
    return float(power[:, high, :].mean())


def sharpness(images, data):
    """(laplacian ratio, hf power ratio) of images relative to data."""
    return (mean_squared_laplacian(images) / mean_squared_laplacian(data),
            high_frequency_power(images) / high_frequency_power(data))


def load_run(workdir):
    """(config, restored model, checkpoint path, training images [N, H, W, 3] in [-1, 1])."""
    opened = run.open_run(workdir, learner=True)
    images = pipeline.to_model_range(opened.data().images).numpy()
    return opened.config, opened.learner, opened.checkpoint, images


def measure(workdir, num_samples):
    """The table's numbers for the run in workdir, as a list of (label, values) rows."""
    config, model, path, images = load_run(workdir)
    recon = np.concatenate([model.generator(z).numpy() for z in
                            np.array_split(model.chains.numpy(), 16)])
    z = tf.random.stateless_normal([num_samples, config.generator.latent_dim],
                                 [config.seed, 7])
    samples = model.generator(z).numpy()
    recon_psnr = float(psnr(tf.reduce_mean(tf.square(images - recon))))
    step = int(path.rsplit("-", 1)[1])
    name = "cooperative" if config.descriptor is not None else "ABP"
    rows = [(f"{name} ({step} steps)", recon_psnr,
             *sharpness(recon, images), *sharpness(samples, images))]
    if config.descriptor is not None:
        revised = model.revise(samples, seed=tf.constant([config.seed, 8])).numpy()
        rows.append(("  its descriptor's revision Ỹ of the samples", float("nan"),
                     float("nan"), float("nan"), *sharpness(revised, images)))
    return rows


def markdown_table(rows):
    header = ("| run | recon PSNR (dB) | recon laplacian | recon hf power "
              "| sample laplacian | sample hf power |\n|---|---|---|---|---|---|\n")
    fmt = lambda v: "–" if np.isnan(v) else f"{v:.2f}" if abs(v) >= 10 else f"{v:.3f}"
    return header + "".join(
        f"| {label} | " + " | ".join(fmt(v) for v in values) + " |\n"
        for label, *values in rows)


def figure(path, workdirs, columns=16):
    """Writes the comparison picture of --figure (each image scaled up 3x)."""
    samples, reconstructions = [], []
    for workdir in workdirs:
        config, model, _, images = load_run(workdir)
        z = tf.random.stateless_normal([columns, config.generator.latent_dim],
                                       [config.seed, 7])
        samples.append(model.generator(z).numpy())
        reconstructions.append(model.generator(model.chains[:columns]).numpy())
    grid = image_grid(np.concatenate(samples + reconstructions + [images[:columns]]),
                      columns=columns)
    write_png(path, np.kron(grid, np.ones((3, 3, 1), np.uint8)))


def train(workdir, *extra):
    command = [sys.executable, os.path.join(ROOT, "train.py"), f"--workdir={workdir}",
               *extra, *FLAGS.train_flag]
    print("$", " ".join(command[1:]), flush=True)
    subprocess.run(command, check=True, cwd=ROOT)


def main(argv):
    del argv
    if FLAGS.train:
        train(FLAGS.abp_workdir)
        train(FLAGS.coop_workdir, "--descriptor")
    rows = measure(FLAGS.abp_workdir, FLAGS.num_samples)
    rows += measure(FLAGS.coop_workdir, FLAGS.num_samples)
    print(markdown_table(rows))
    print("Data: laplacian and hf power ratios are relative to the training images "
          "(1.0 = as sharp as the data).")
    if FLAGS.figure:
        figure(FLAGS.figure, [FLAGS.abp_workdir, FLAGS.coop_workdir])


if __name__ == "__main__":
    app.run(main)
