"""The `evaluate` command: scores trained runs and prints one markdown table.

    python -m sparse_gen_tf.evaluate --workdir=runs/parts[,runs/parts_dense]
    sparse-gen-evaluate --workdir=runs/parts

The rows are defined in `explanation/evaluation.py`; each run's scores also go to
WORKDIR/evaluation.json.
"""

import os
import sys

from absl import app, flags

from sparse_gen_tf import cli
from sparse_gen_tf.errors import UserError
from sparse_gen_tf.explanation import evaluation


def define_flags():
    flags.DEFINE_list("workdir", None, "Training run(s) to score, comma separated.",
                      required=True)
    flags.DEFINE_integer("num_heldout", 256, "Held-out images to infer and score.",
                         lower_bound=1)
    flags.DEFINE_integer("num_fit", 512, "Training images that fit the channel-to-part "
                         "map and give the training PSNR.", lower_bound=1)
    flags.DEFINE_boolean("baseline", True, "Also score plain Langevin from N(0, I).")
    flags.DEFINE_boolean("served", True, "Also score the exported reconstruct signature "
                         "(exported with the export command's defaults to a temporary "
                         "directory, loaded with TensorFlow).")
    flags.DEFINE_integer("seed", 0, "Seeds the inference.", lower_bound=0)
    flags.DEFINE_string("attributes", None, "An attribute file in CelebA's format "
                        "(list_attr_celeba.txt) for the held-out faces of a "
                        "--dataset=folder run (celeb_a runs use TFDS' labels): adds the "
                        "dissection rows, how well the best single unit of each layer, "
                        "and of pixel PCA, detects each localised attribute.")
    flags.register_validator("attributes", lambda path: path is None or os.path.isfile(path),
                             message="--attributes must name an existing file, e.g. "
                             "path/to/list_attr_celeba.txt")
    cli.define_inference_flags()


def main(argv):
    cli.start("evaluate", argv)
    values = flags.FLAGS
    try:
        settings = cli.inference_settings(values)
        all_results = [evaluation.evaluate(w, num_heldout=values.num_heldout,
                                           num_fit=values.num_fit, settings=settings,
                                           baseline=values.baseline, served=values.served,
                                           seed=values.seed, attributes=values.attributes)
                       for w in values.workdir]
    except UserError as e:
        sys.exit(f"evaluate: error: {e}")
    print(evaluation.markdown_table(all_results))


def run():
    """The console script `sparse-gen-evaluate`."""
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run()
