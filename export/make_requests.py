"""Writes the example REST requests of export/requests/ for a SavedModel export.

    python export/make_requests.py                         # untrained default config
    python export/make_requests.py --export_dir=exports/sparse_gen/3 --out_dir=/tmp/req

Without --export_dir it exports an untrained generator of the default config (only the
shapes matter), so the committed files follow sparse_gen_tf/training/config.py.
"""

import json
import os
import sys
import tempfile

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from sparse_gen_tf import serving
from sparse_gen_tf.training.config import TrainConfig
from sparse_gen_tf.model.generator import Generator

flags.DEFINE_string("export_dir", None, "A SavedModel version directory (E/<version>).")
flags.DEFINE_string("out_dir", os.path.join(ROOT, "export", "requests"),
                    "Where the <signature>.rows.json / .columns.json files go.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    with tempfile.TemporaryDirectory() as tmp:
        export_dir = FLAGS.export_dir
        if export_dir is None:
            defaults = TrainConfig()
            export_dir = serving.export_generator(
                Generator(defaults.generator), tmp,
                settings=serving.ReconstructSettings(steps=1, restarts=1),
                step_size=defaults.langevin.step_size, sigma=defaults.langevin.sigma)
        bodies = serving.example_requests(export_dir)
    os.makedirs(FLAGS.out_dir, exist_ok=True)
    for name, body in bodies.items():
        with open(os.path.join(FLAGS.out_dir, name), "w") as f:
            json.dump(body, f, separators=(",", ":"))
            f.write("\n")
    print(f"Wrote {len(bodies)} requests to {FLAGS.out_dir}")


if __name__ == "__main__":
    app.run(main)
