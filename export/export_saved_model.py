"""Exports the latest checkpoint of a training run as a SavedModel for TF Serving.

    python export/export_saved_model.py --workdir=runs/parts --export_base=exports/sparse_gen

writes exports/sparse_gen/<version>/, the next integer version (or --version), with the
signatures serving_default, reconstruct and sample (see sparse_gen_tf/export.py and
README.md, "Serving"). An existing version is never overwritten.
"""

import os
import sys

from absl import app, flags, logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sparse_gen_tf import export  # noqa: E402
from sparse_gen_tf.errors import UserError  # noqa: E402

flags.DEFINE_string("workdir", None, "Training run whose latest checkpoint is exported.",
                    required=True)
flags.DEFINE_string("export_base", None,
                    "TF Serving model base path; the export goes to <export_base>/<version>.",
                    required=True)
flags.DEFINE_integer("reconstruct_steps", 100,
                     "Langevin steps baked into the reconstruct signature.", lower_bound=1)
flags.DEFINE_integer("version", None,
                     "Version to write (default: the largest existing one + 1); refused if "
                     "it exists.", lower_bound=1)
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        sys.exit(f"export_saved_model.py: unexpected arguments {' '.join(argv[1:])}; flags "
                 "look like --name=value")
    if not FLAGS["verbosity"].present:
        # TensorFlow's INFO lines about saving (renamed resources, sharding) are noise here.
        logging.set_verbosity(logging.WARNING)
    try:
        path = export.export_workdir(FLAGS.workdir, FLAGS.export_base,
                                     reconstruct_steps=FLAGS.reconstruct_steps,
                                     version=FLAGS.version)
    except UserError as e:
        sys.exit(f"export_saved_model.py: error: {e}")
    print(f"Exported {path} (signatures: {', '.join(export.SIGNATURES)}; reconstruct runs "
          f"{FLAGS.reconstruct_steps} Langevin steps)")


if __name__ == "__main__":
    app.run(main)
