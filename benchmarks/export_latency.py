"""Per-call latency of the exported signatures, loaded with plain TensorFlow.

    python benchmarks/export_latency.py [--calls=20] [--reconstruct_calls=5]

Exports a generator of the default config (sparse_gen_tf/training/config.py) to a temporary
directory, then times each signature at batch 1 and batch 64 in a fresh process that
imports TensorFlow only, as a server would load it, and prints a markdown table of the
median of --calls calls. The weights are untrained: latency depends on the ops and
shapes, not on the values, except that exact ties at a TopK threshold take a slower
branch; the biases are drawn at random (an untrained model has zero biases, which
makes such ties common) so that ties are as rare as in a trained model. reconstruct starts
from the k-means centroids of random chains the size of a default run's (num_images x
latent_dim), as a default export does. benchmarks/served_reconstruct.py measures it on a
trained run, beside the library's inference.
"""

import os
import subprocess
import sys
import tempfile

from absl import app, flags

flags.DEFINE_integer("calls", 20, "Timed calls per signature and batch size (median).")
flags.DEFINE_integer("reconstruct_calls", 5,
                     "Timed calls of reconstruct, which is far slower (Langevin).")
flags.DEFINE_integer("reconstruct_steps", 100, "Langevin steps baked into reconstruct.")
flags.DEFINE_string("measure", None, "Internal: time this SavedModel (fresh process).")
FLAGS = flags.FLAGS
BATCH_SIZES = (1, 64)


def measure(export_dir, calls, reconstruct_calls):
    """Prints the markdown table; imports TensorFlow and NumPy only."""
    import time

    import numpy as np
    import tensorflow as tf

    assert "sparse_gen_tf" not in sys.modules
    signatures = tf.saved_model.load(export_dir).signatures
    rows = []
    for name in ("serving_default", "reconstruct", "sample"):
        signature = signatures[name]
        (key, spec), = signature.structured_input_signature[1].items()
        cells = []
        for batch in BATCH_SIZES:
            shape = [batch] + spec.shape.as_list()[1:]
            if spec.dtype.is_integer:
                value = tf.range(batch, dtype=spec.dtype)
            else:
                value = tf.random.stateless_uniform(shape, [1, batch], dtype=spec.dtype)
            for _ in range(2):  # the first calls build kernels and thread pools
                signature(**{key: value})
            times = []
            for _ in range(reconstruct_calls if name == "reconstruct" else calls):
                start = time.perf_counter()
                outputs = signature(**{key: value})
                [o.numpy() for o in outputs.values()]
                times.append(time.perf_counter() - start)
            median = float(np.median(times)) * 1e3
            cells.append(f"{median:.2f}" if batch == 1 else
                         f"{median:.2f} ({median / batch:.3f} per example)")
        rows.append(f"| `{name}` | {cells[0]} | {cells[1]} |")
    print("| signature | batch 1 (ms) | batch 64 (ms) |")
    print("|---|---|---|")
    print("\n".join(rows))


def main(argv):
    del argv
    if FLAGS.measure:
        measure(FLAGS.measure, FLAGS.calls, FLAGS.reconstruct_calls)
        return
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import numpy as np

    from sparse_gen_tf import serving
    from sparse_gen_tf.training.config import TrainConfig
    from sparse_gen_tf.model.generator import Generator

    defaults = TrainConfig()
    generator = Generator(defaults.generator)
    rng = np.random.RandomState(0)
    for variable in generator.weights:
        if variable.path.endswith("bias"):
            variable.assign(rng.normal(0.0, 0.1, variable.shape).astype(np.float32))
    with tempfile.TemporaryDirectory() as tmp:
        chains = rng.standard_normal([defaults.num_images, defaults.generator.latent_dim])
        settings = serving.ReconstructSettings(steps=FLAGS.reconstruct_steps)
        path = serving.export_generator(generator, tmp, settings=settings, chains=chains,
                                       step_size=defaults.langevin.step_size,
                                       sigma=defaults.langevin.sigma)
        cfg = generator.config
        print(f"Default config: image {cfg.image_size}x{cfg.image_size}, latent_dim "
              f"{cfg.latent_dim}, channels {cfg.channels}, topk {cfg.topk}; reconstruct "
              f"runs {settings.restarts} chains of {FLAGS.reconstruct_steps} Langevin "
              f"steps per image; median of {FLAGS.calls} "
              f"calls ({FLAGS.reconstruct_calls} for reconstruct) after 2 warm-up calls.\n",
              flush=True)
        subprocess.run([sys.executable, os.path.abspath(__file__), f"--measure={path}",
                        f"--calls={FLAGS.calls}",
                        f"--reconstruct_calls={FLAGS.reconstruct_calls}"], check=True)


if __name__ == "__main__":
    app.run(main)
