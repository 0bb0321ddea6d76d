"""The `export` command: the latest checkpoint of a training run as a SavedModel for
TF Serving.

    python export/export_saved_model.py --workdir=runs/parts --export_base=exports/sparse_gen
    sparse-gen-export --workdir=runs/parts --export_base=exports/sparse_gen

writes exports/sparse_gen/<version>/, the next integer version (or --version), with the
signatures serving_default, reconstruct and sample (see sparse_gen_tf/serving/ and
README.md, "Serving"). An existing version is never overwritten. The export holds no
training example's code unless --export_training_codes asks for it.
"""

import sys

from absl import app, flags

from sparse_gen_tf import cli, serving
from sparse_gen_tf.errors import UserError


def define_flags():
    flags.DEFINE_string("workdir", None, "Training run whose latest checkpoint is exported.",
                        required=True)
    flags.DEFINE_string("export_base", None, "TF Serving model base path; the export goes "
                        "to <export_base>/<version>.", required=True)
    defaults = serving.ReconstructSettings()
    flags.DEFINE_integer("reconstruct_steps", defaults.steps,
                         "Langevin steps per chain baked into the reconstruct signature.",
                         lower_bound=1)
    flags.DEFINE_integer("reconstruct_restarts", defaults.restarts,
                         "Chains per image in reconstruct; the best by log joint wins.",
                         lower_bound=1)
    flags.DEFINE_integer("reconstruct_centroids", defaults.centroids,
                         "k-means centroids of the training chains (each the mean of at "
                         f"least {serving.MIN_MEMBERS}) that reconstruct starts from; 0 "
                         "starts from N(0, I) only.", lower_bound=0)
    flags.DEFINE_integer("reconstruct_refine_steps", defaults.refine_steps,
                         "Noise-free steps (gradient ascent on Eq. 11) on reconstruct's "
                         "winning chain.", lower_bound=0)
    flags.DEFINE_float("reconstruct_refine_step_size", defaults.refine_step_size,
                       "δ of those steps (default: the model's Langevin δ, at which "
                       "gradient ascent can overshoot; faces use 0.1).", lower_bound=0.0)
    flags.DEFINE_boolean("export_training_codes", defaults.training_codes,
                         "Put every training image's chain in the export as reconstruct's "
                         "starting points. Anyone with the file can then render the "
                         "training images; use it only for a model trained on data you may "
                         "publish.")
    flags.DEFINE_integer("version", None, "Version to write (default: the largest existing "
                         "one + 1); refused if it exists.", lower_bound=1)


def main(argv):
    # Quiet: TensorFlow's lines about saving (renamed resources, sharding) are noise here.
    cli.start("export_saved_model.py", argv)
    values = flags.FLAGS
    settings = serving.ReconstructSettings(
        steps=values.reconstruct_steps, restarts=values.reconstruct_restarts,
        centroids=values.reconstruct_centroids, training_codes=values.export_training_codes,
        refine_steps=values.reconstruct_refine_steps,
        refine_step_size=values.reconstruct_refine_step_size)
    try:
        path = serving.export_workdir(values.workdir, values.export_base, settings=settings,
                                      version=values.version)
    except UserError as e:
        sys.exit(f"export_saved_model.py: error: {e}")
    codes = " from the training codes" if values.export_training_codes else ""
    refine = (f", then {settings.refine_steps} noise-free steps" if settings.refine_steps
              else "")
    print(f"Exported {path} (signatures: {', '.join(serving.SIGNATURES)}; reconstruct runs "
          f"{settings.restarts} chains of {settings.steps} Langevin steps{codes}{refine})")


def run():
    """`python export/export_saved_model.py` and the console script `sparse-gen-export`."""
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run()
