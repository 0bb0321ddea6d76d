"""Exports the latest checkpoint of a training run as a SavedModel for TF Serving.

    python export/export_saved_model.py --workdir=runs/parts --export_base=exports/sparse_gen

writes exports/sparse_gen/<version>/, the next integer version (or --version), with the
signatures serving_default, reconstruct and sample (see sparse_gen_tf/export.py and
README.md, "Serving"). An existing version is never overwritten. The export holds no
training example's code unless --export_training_codes asks for it.
"""

import os
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sparse_gen_tf import cli, export  # noqa: E402
from sparse_gen_tf.errors import UserError  # noqa: E402

flags.DEFINE_string("workdir", None, "Training run whose latest checkpoint is exported.",
                    required=True)
flags.DEFINE_string("export_base", None,
                    "TF Serving model base path; the export goes to <export_base>/<version>.",
                    required=True)
_R = export.ReconstructSettings()
flags.DEFINE_integer("reconstruct_steps", _R.steps,
                     "Langevin steps per chain baked into the reconstruct signature.",
                     lower_bound=1)
flags.DEFINE_integer("reconstruct_restarts", _R.restarts,
                     "Chains per image in reconstruct; the best by log joint wins.",
                     lower_bound=1)
flags.DEFINE_integer("reconstruct_centroids", _R.centroids,
                     "k-means centroids of the training chains (each the mean of at "
                     f"least {export.MIN_MEMBERS}) that reconstruct starts from; 0 starts "
                     "from N(0, I) only.", lower_bound=0)
flags.DEFINE_boolean("export_training_codes", _R.training_codes,
                     "Put every training image's chain in the export as reconstruct's "
                     "starting points. Anyone with the file can then render the training "
                     "images; use it only for a model trained on data you may publish.")
flags.DEFINE_integer("version", None,
                     "Version to write (default: the largest existing one + 1); refused if "
                     "it exists.", lower_bound=1)
FLAGS = flags.FLAGS


def main(argv):
    # Quiet: TensorFlow's lines about saving (renamed resources, sharding) are noise here.
    cli.start("export_saved_model.py", argv)
    try:
        settings = export.ReconstructSettings(
            steps=FLAGS.reconstruct_steps, restarts=FLAGS.reconstruct_restarts,
            centroids=FLAGS.reconstruct_centroids,
            training_codes=FLAGS.export_training_codes)
        path = export.export_workdir(FLAGS.workdir, FLAGS.export_base, settings=settings,
                                     version=FLAGS.version)
    except UserError as e:
        sys.exit(f"export_saved_model.py: error: {e}")
    print(f"Exported {path} (signatures: {', '.join(export.SIGNATURES)}; reconstruct runs "
          f"{FLAGS.reconstruct_restarts} chains of {FLAGS.reconstruct_steps} Langevin steps"
          f"{' from the training codes' if FLAGS.export_training_codes else ''})")


if __name__ == "__main__":
    app.run(main)
