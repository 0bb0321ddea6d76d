"""Seconds per image of the exported signatures, loaded with plain TensorFlow, for the
search `reconstruct` and the amortized one, with their held-out PSNR and parse accuracy.

    python benchmarks/export_latency.py [--calls=20] [--reconstruct_calls=5]
    python benchmarks/export_latency.py --workdir=runs/parts [--num_heldout=256]

Exports the generator to a temporary directory, with `reconstruct` as the search
(--reconstruct=search: 16 Langevin chains of 100 steps per image, from k-means centroids
of the chains, one image at a time) and as the amortized inference (the inference
network's guess and the best --amortized_starts - 1 k-means centroids of the chains, then
--amortized_steps noise-free steps of momentum --amortized_momentum from each, the best
kept, a batch at once; one export per combination of values of the lists). A fresh
process that imports TensorFlow only, as a server would load it, then times each
signature at batch 1 and batch 64, the exports' calls interleaved so that the load of a
shared machine falls on all of them alike, and prints the median of --calls calls per
cell (--reconstruct_calls for the search), as seconds per image, and the ratios the
amortized inference is judged by.

With --workdir, the run's latest checkpoint is exported with its inference network
(fitted here in memory for --fit_steps if the run has none, as fit_encoder would) and
the held-out images are inferred through each export: PSNR, and on the parts dataset
parse accuracy (reports/evaluation.py). Without it, a generator of the default
config with random biases (an untrained model has zero biases, which tie at every TopK)
and an untrained network stand in: latency depends on the ops and shapes, not on the
weights; the search starts from centroids of random chains the size of a default run's.
"""

import itertools
import json
import os
import subprocess
import sys
import tempfile

from absl import app, flags

flags.DEFINE_string("workdir", None, "Trained run to export and score (default: an "
                    "untrained generator of the default config, latency only).")
flags.DEFINE_integer("num_heldout", 256, "Held-out images to score (--workdir).")
flags.DEFINE_integer("calls", 20, "Timed calls per cell (median).")
flags.DEFINE_integer("reconstruct_calls", 5,
                     "Timed calls of the search reconstruct, which is far slower.")
flags.DEFINE_integer("warmup_calls", 2, "Untimed calls per cell before the timed ones "
                     "(the first build kernels and thread pools).", lower_bound=1)
flags.DEFINE_integer("reconstruct_steps", 100, "Langevin steps per chain of the search.")
flags.DEFINE_list("amortized_steps", None, "Refinement steps of the amortized "
                  "reconstruct; one export per value (default: the export command's).")
flags.DEFINE_list("amortized_starts", ["1"], "Starts of the amortized reconstruct (the "
                  "guess and the best k-means centroids, `inference.amortized`); one "
                  "export per value and per --amortized_steps.")
flags.DEFINE_list("amortized_momentum", None, "Heavy-ball momentum of the amortized "
                  "refinement; one export per value (and per value of the lists above; "
                  "default: the export command's).")
flags.DEFINE_integer("amortized_langevin_steps", None, "Langevin steps from each start "
                     "before the refinement (default: the export command's).")
flags.DEFINE_float("amortized_step_size", None, "δ of those steps (default: the export "
                   "command's).")
flags.DEFINE_integer("fit_steps", 2000, "Steps of fitting an inference network to a run "
                     "that has none (--workdir).")
flags.DEFINE_string("output", None, "Also write the figures to this JSON file.")
flags.DEFINE_string("measure", None, "Internal: time these exports (JSON, fresh process).")
FLAGS = flags.FLAGS
BATCH_SIZES = (1, 64)


def measure(exports, calls, reconstruct_calls, warmup_calls=2):
    """Prints {label: {signature: {batch: median seconds per call}}} as JSON; imports
    TensorFlow and NumPy only. exports: {label: SavedModel path}."""
    import time

    import numpy as np
    import tensorflow as tf

    assert "sparse_gen_tf" not in sys.modules
    loaded = {label: tf.saved_model.load(path).signatures for label, path in exports.items()}
    first = next(iter(exports))
    # serving_default and sample are the same graph in every export: time them once.
    jobs = [(first, "serving_default"), (first, "sample")] + [
        (label, "reconstruct") for label in exports]
    medians = {label: {} for label in exports}
    for batch in BATCH_SIZES:
        inputs = {}
        for label, name in jobs:
            (key, spec), = loaded[label][name].structured_input_signature[1].items()
            shape = [batch] + spec.shape.as_list()[1:]
            if spec.dtype.is_integer:
                value = tf.range(batch, dtype=spec.dtype)
            else:
                value = tf.random.stateless_uniform(shape, [1, batch], dtype=spec.dtype)
            inputs[label, name] = {key: value}
        counts = {job: (reconstruct_calls if job[1] == "reconstruct" and job[0] == "search"
                        else calls) for job in jobs}
        times = {job: [] for job in jobs}
        for job in jobs:  # the first calls build kernels and thread pools
            for _ in range(warmup_calls):
                loaded[job[0]][job[1]](**inputs[job])
        for call in range(max(counts.values())):
            for job in jobs:  # interleaved: a burst of load falls on every export alike
                if call >= counts[job]:
                    continue
                start = time.perf_counter()
                outputs = loaded[job[0]][job[1]](**inputs[job])
                [o.numpy() for o in outputs.values()]
                times[job].append(time.perf_counter() - start)
        for (label, name), values in times.items():
            medians[label].setdefault(name, {})[batch] = float(np.median(values))
    print(json.dumps(medians))


def export_all(tmp, generator, encoder, *, step_size, sigma, chains, prior=None):
    """{label: path} of the search export and one amortized export per --amortized_steps."""
    from sparse_gen_tf import serving
    exports = {}
    settings = {"search": serving.ReconstructSettings(method="search",
                                                      steps=FLAGS.reconstruct_steps)}
    extra = ({} if FLAGS.amortized_step_size is None
             else {"amortized_step_size": FLAGS.amortized_step_size})
    if FLAGS.amortized_langevin_steps is not None:
        extra["amortized_langevin_steps"] = FLAGS.amortized_langevin_steps
    defaults = serving.ReconstructSettings()
    for steps, starts, momentum in itertools.product(
            FLAGS.amortized_steps or [defaults.amortized_steps], FLAGS.amortized_starts,
            FLAGS.amortized_momentum or [defaults.amortized_momentum]):
        settings[f"amortized, {steps} steps, {starts} starts, momentum {momentum}"] = (
            serving.ReconstructSettings(method="amortized", amortized_steps=int(steps),
                                        amortized_starts=int(starts),
                                        amortized_momentum=float(momentum), **extra))
    for label, how in settings.items():
        exports[label] = serving.export_generator(
            generator, os.path.join(tmp, str(len(exports))), settings=how,
            step_size=step_size, sigma=sigma, chains=chains, prior=prior, encoder=encoder)
    return exports, settings


def trained(workdir):
    """(run, its inference network, held-out images in [-1, 1], scorer z -> (PSNR, parse
    accuracy or NaN))."""
    from sparse_gen_tf.data import pipeline
    from sparse_gen_tf.explanation import parts_scores
    from sparse_gen_tf.reports import evaluation
    from sparse_gen_tf.learning import amortized
    from sparse_gen_tf.model.encoder import Encoder, EncoderConfig
    from sparse_gen_tf.training.run import open_run

    opened = open_run(workdir)
    model, config = opened, opened.config
    generator, chains = model.generator, model.chains.numpy()
    data = opened.data()
    heldout, truth = pipeline.heldout_images(config, FLAGS.num_heldout, data)
    heldout = pipeline.to_model_range(heldout).numpy()
    if not len(heldout):
        sys.exit(f"{workdir} has no held-out images; train with --heldout=N")
    encoder = model.encoder
    if encoder is None:
        print(f"{workdir} has no inference network: fitting one for {FLAGS.fit_steps} "
              "steps (in memory).", flush=True)
        encoder = Encoder(EncoderConfig(), latent_dim=config.generator.latent_dim,
                          image_size=config.generator.image_size)
        amortized.fit(encoder, generator, pipeline.to_model_range(data.images).numpy(),
                      sigma=model.langevin.sigma, steps=FLAGS.fit_steps)
    channel_parts = None
    if truth is not None:
        dominant = parts_scores.dominant_channels(
            parts_scores.bottom_contributions(generator, chains[:512]))
        channel_parts = parts_scores.fit_channel_parts(
            dominant, data.ground_truth.part_labels[:512], generator.config.channels[-1])

    def score(z):
        if channel_parts is None:
            return parts_scores.psnr(heldout, generator(z).numpy()), float("nan")
        return evaluation.score_latents(generator, z, heldout, truth.part_labels,
                                        channel_parts)
    return opened, encoder, heldout, score


def served_z(path, images):
    """z of images [N, H, W, 3] in [-1, 1] through the export's reconstruct, 64 a call."""
    import numpy as np
    import tensorflow as tf

    from sparse_gen_tf import serving
    reconstruct = tf.saved_model.load(path).signatures["reconstruct"]
    return np.concatenate([
        reconstruct(image=tf.constant(serving.to_unit_range(chunk)))["z"].numpy()
        for chunk in np.split(images, range(64, len(images), 64))])


def main(argv):
    del argv
    if FLAGS.measure:
        measure(json.loads(FLAGS.measure), FLAGS.calls, FLAGS.reconstruct_calls,
                FLAGS.warmup_calls)
        return
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import numpy as np

    from sparse_gen_tf.model.encoder import Encoder, EncoderConfig
    from sparse_gen_tf.model.generator import Generator
    from sparse_gen_tf.training.config import TrainConfig

    quality = {}
    with tempfile.TemporaryDirectory() as tmp:
        if FLAGS.workdir:
            opened, encoder, heldout, score = trained(FLAGS.workdir)
            model = opened
            generator, cfg = model.generator, model.generator.config
            exports, settings = export_all(
                tmp, generator, encoder, step_size=model.langevin.step_size,
                sigma=model.langevin.sigma, chains=model.chains.numpy(), prior=model.prior)
            for label, path in exports.items():
                quality[label] = score(served_z(path, heldout))
            source = (f"Run {FLAGS.workdir} ({opened.config.dataset}, step {opened.step}); "
                      f"{len(heldout)} held-out images")
        else:
            defaults = TrainConfig()
            generator, cfg = Generator(defaults.generator), defaults.generator
            rng = np.random.RandomState(0)
            for variable in generator.weights:
                if variable.path.endswith("bias"):
                    variable.assign(rng.normal(0.0, 0.1, variable.shape).astype(np.float32))
            encoder = Encoder(EncoderConfig(), latent_dim=cfg.latent_dim,
                              image_size=cfg.image_size)
            chains = rng.standard_normal([defaults.num_images, cfg.latent_dim])
            exports, settings = export_all(
                tmp, generator, encoder, step_size=defaults.langevin.step_size,
                sigma=defaults.langevin.sigma, chains=chains)
            source = "Untrained generator and inference network of the default config"
        print(f"{source}; image {cfg.image_size}x{cfg.image_size}, latent_dim "
              f"{cfg.latent_dim}, channels {cfg.channels}, topk {cfg.topk}. Median of "
              f"{FLAGS.calls} calls ({FLAGS.reconstruct_calls} for the search) after "
              f"{FLAGS.warmup_calls} warm-up calls, the exports interleaved.\n", flush=True)
        timed = subprocess.run([sys.executable, os.path.abspath(__file__),
                                f"--measure={json.dumps(exports)}",
                                f"--calls={FLAGS.calls}",
                                f"--reconstruct_calls={FLAGS.reconstruct_calls}",
                                f"--warmup_calls={FLAGS.warmup_calls}"],
                               check=True, capture_output=True, text=True)
    medians = json.loads(timed.stdout.strip().splitlines()[-1])
    report(medians, quality, settings)


def report(medians, quality, settings):
    """Prints the table and the ratios; writes --output."""
    per_image = {label: {name: {b: cell[str(b)] / b for b in BATCH_SIZES}
                         for name, cell in signatures.items()}
                 for label, signatures in medians.items()}
    print("| signature | batch 1 (ms per image) | batch 64 (ms per image) | held-out PSNR "
          "(dB) | parse accuracy |\n|---|---|---|---|---|")
    for label, signatures in per_image.items():
        for name, cell in signatures.items():
            shown = f"`{name}`" + (f" ({label})" if name == "reconstruct" else "")
            psnr, accuracy = quality.get(label, (float("nan"),) * 2) if (
                name == "reconstruct") else (float("nan"),) * 2
            scores = (f"{psnr:.2f} | {accuracy:.3f}" if psnr == psnr else " | ")
            print(f"| {shown} | {cell[1] * 1e3:.2f} | {cell[64] * 1e3:.3f} | {scores} |")
    search = per_image["search"]["reconstruct"]
    figures = {"seconds_per_image": per_image, "quality": quality,
               "settings": {label: how.__dict__ for label, how in settings.items()}}
    print()
    for label in per_image:
        if label == "search":
            continue
        new = per_image[label]["reconstruct"]
        ratios = {"speedup_batch_1": search[1] / new[1],
                  "speedup_per_image_batch_64": search[64] / new[64],
                  "batch_64_over_batch_1_per_image": new[64] / new[1]}
        line = (f"{label}: {ratios['speedup_batch_1']:.1f}x faster than the search at "
                f"batch 1, {ratios['speedup_per_image_batch_64']:.1f}x per image at batch "
                f"64; per image, batch 64 costs {ratios['batch_64_over_batch_1_per_image']:.3f}"
                " of batch 1")
        if label in quality and "search" in quality:
            ratios["psnr_minus_search"] = quality[label][0] - quality["search"][0]
            ratios["parse_accuracy_minus_search"] = quality[label][1] - quality["search"][1]
            line += (f"; PSNR {ratios['psnr_minus_search']:+.2f} dB, parse accuracy "
                     f"{ratios['parse_accuracy_minus_search']:+.3f} against the search")
        figures.setdefault("ratios", {})[label] = ratios
        print(line)
    print(f"search: per image, batch 64 costs {search[64] / search[1]:.3f} of batch 1")
    if FLAGS.output:
        with open(FLAGS.output, "w") as f:
            json.dump(figures, f, indent=2)


if __name__ == "__main__":
    app.run(main)
