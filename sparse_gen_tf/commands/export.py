"""The `export` command: the latest checkpoint of a training run as a SavedModel for
TF Serving.

    python export/export_saved_model.py --workdir=runs/parts --export_base=exports/sparse_gen
    sparse-gen-export --workdir=runs/parts --export_base=exports/sparse_gen

writes exports/sparse_gen/<version>/, the next integer version (or --version), with the
signatures serving_default, reconstruct and sample (see sparse_gen_tf/serving/ and
README.md, "Serving"). An existing version is never overwritten. The export holds no
training example's code unless --export_training_codes asks for it.

reconstruct is amortized (the run's inference network, then a few refinement steps) when
the run has one (train.py --encoder, or python -m sparse_gen_tf.commands.fit_encoder), else the
search of Langevin chains; --reconstruct chooses.
"""

from sparse_gen_tf import console  # noqa: F401  (first: quiets TensorFlow as it loads)

import json
import os
import sys

from absl import flags

from sparse_gen_tf import serving
from sparse_gen_tf.commands import cli
from sparse_gen_tf.errors import UserError


def define_flags():
    flags.DEFINE_string("workdir", None, "Training run whose latest checkpoint is exported.",
                        required=True)
    flags.DEFINE_string("export_base", None, "TF Serving model base path; the export goes "
                        "to <export_base>/<version>.", required=True)
    defaults = serving.ReconstructSettings()
    flags.DEFINE_enum("reconstruct", defaults.method, list(serving.RECONSTRUCT_METHODS),
                      "How the reconstruct signature infers z: amortized, the run's "
                      "inference network then --reconstruct_amortized_steps refinement "
                      "steps; search, --reconstruct_restarts Langevin chains of "
                      "--reconstruct_steps steps; auto, amortized when the run has an "
                      "inference network, else search.")
    flags.DEFINE_integer("reconstruct_amortized_steps", defaults.amortized_steps,
                         "Amortized reconstruct: noise-free steps of Eq. 10 after the "
                         "network's guess.", lower_bound=0)
    flags.DEFINE_float("reconstruct_amortized_step_size", defaults.amortized_step_size,
                       "Amortized reconstruct: δ of those steps.", lower_bound=0.0)
    flags.DEFINE_float("reconstruct_amortized_momentum", defaults.amortized_momentum,
                       "Amortized reconstruct: heavy-ball momentum β of those steps "
                       "(0: plain gradient ascent).", lower_bound=0.0, upper_bound=0.99)
    flags.DEFINE_integer("reconstruct_amortized_starts", defaults.amortized_starts,
                         "Amortized reconstruct: the guess and this many - 1 of the "
                         "--reconstruct_centroids with the highest log joint are all "
                         "refined, the best kept; 1 refines the guess alone.",
                         lower_bound=1)
    flags.DEFINE_integer("reconstruct_amortized_langevin_steps",
                         defaults.amortized_langevin_steps,
                         "Amortized reconstruct: Langevin steps (the run's δ, a fixed noise "
                         "draw per start) from every start before the noise-free ones.",
                         lower_bound=0)
    flags.DEFINE_integer("reconstruct_steps", defaults.steps,
                         "Search: Langevin steps per chain baked into the reconstruct "
                         "signature.", lower_bound=1)
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
    flags.DEFINE_boolean("fit_prior", False, "For a run whose checkpoint holds no prior "
                         "fitted to its generator (trained before the prior was saved with "
                         "the model, or stopped between two of training's fits: "
                         "ckpt-N.prior_stale): fit it now from the run's chains, as "
                         "training would have. Without it such a run is refused.")
    flags.DEFINE_integer("version", None, "Version to write (default: the largest existing "
                         "one + 1); refused if it exists.", lower_bound=1)


def main(argv):
    # Quiet: TensorFlow's lines about saving (renamed resources, sharding) are noise here.
    cli.start("export_saved_model.py", argv)
    values = flags.FLAGS
    settings = serving.ReconstructSettings(
        method=values.reconstruct, amortized_steps=values.reconstruct_amortized_steps,
        amortized_step_size=values.reconstruct_amortized_step_size,
        amortized_momentum=values.reconstruct_amortized_momentum,
        amortized_starts=values.reconstruct_amortized_starts,
        amortized_langevin_steps=values.reconstruct_amortized_langevin_steps,
        steps=values.reconstruct_steps, restarts=values.reconstruct_restarts,
        centroids=values.reconstruct_centroids, training_codes=values.export_training_codes,
        refine_steps=values.reconstruct_refine_steps,
        refine_step_size=values.reconstruct_refine_step_size)
    cli.progress("export_saved_model.py", f"tracing and writing the signatures of "
                 f"{values.workdir}")
    try:
        path = serving.export_workdir(values.workdir, values.export_base, settings=settings,
                                      version=values.version, fit_prior=values.fit_prior)
    except UserError as e:
        sys.exit(f"export_saved_model.py: error: {e}")
    with open(os.path.join(path, serving.INFO_FILE)) as f:
        method = json.load(f)["signatures"]["reconstruct"]["method"]
    if method == "amortized":
        starts = (f" and {settings.amortized_starts - 1} other starts"
                  if settings.amortized_starts > 1 else "")
        momentum = (f" (momentum {settings.amortized_momentum})"
                    if settings.amortized_momentum else "")
        how = (f"the inference network's guess{starts}, then {settings.amortized_steps} "
               f"noise-free steps{momentum}")
    else:
        codes = " from the training codes" if values.export_training_codes else ""
        refine = (f", then {settings.refine_steps} noise-free steps"
                  if settings.refine_steps else "")
        how = f"{settings.restarts} chains of {settings.steps} Langevin steps{codes}{refine}"
    print(f"Exported {path} (signatures: {', '.join(serving.SIGNATURES)}; reconstruct "
          f"({method}) runs {how})")


def run():
    """`python export/export_saved_model.py` and the console script `sparse-gen-export`."""
    define_flags()
    cli.run("export_saved_model.py", main)


if __name__ == "__main__":
    run()
