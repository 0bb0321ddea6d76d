"""The `evaluate` command: scores trained runs and prints one markdown table.

    python -m sparse_gen_tf.commands.evaluate --workdir=runs/parts[,runs/parts_dense]
    sparse-gen-evaluate --workdir=runs/parts

The rows are defined in `reports/evaluation.py`; each run's scores also go to
WORKDIR/evaluation.json.
"""

from sparse_gen_tf import console  # noqa: F401  (first: quiets TensorFlow as it loads)

import os
import sys

from absl import flags

from sparse_gen_tf.commands import cli
from sparse_gen_tf.errors import UserError
from sparse_gen_tf.reports import evaluation


def define_flags():
    flags.DEFINE_list("workdir", None, "Training run(s) to score, comma separated.",
                      required=True)
    flags.DEFINE_integer("num_heldout", 256, "Held-out images to infer and score.",
                         lower_bound=1)
    flags.DEFINE_integer("num_fit", 512, "Training images that fit the channel-to-part "
                         "map and give the training PSNR through the held-out images' "
                         "inference.", lower_bound=1)
    flags.DEFINE_boolean("baseline", True, "Also score plain Langevin from N(0, I).")
    flags.DEFINE_boolean("served", True, "Also score the exported reconstruct signature "
                         "(exported with the export command's defaults to a temporary "
                         "directory, loaded with TensorFlow).")
    flags.DEFINE_integer("seed", 0, "Seeds the inference.", lower_bound=0)
    flags.DEFINE_string("attributes", None, "An attribute file in CelebA's format "
                        "(list_attr_celeba.txt) for the held-out faces of a "
                        "--dataset=folder run (celeb_a runs use TFDS' labels): adds the "
                        "dissection rows, how well the best single unit of each layer, "
                        "and of pixel PCA, detects each localised attribute, and the "
                        "sample-quality rows (--classifier).")
    flags.register_validator("attributes", lambda path: path is None or os.path.isfile(path),
                             message="--attributes must name an existing file, e.g. "
                             "path/to/list_attr_celeba.txt")
    flags.DEFINE_string("classifier", None, "With --attributes: the attribute classifier "
                        "(.keras) that scores every run; trained there on the first run's "
                        "training faces if missing, reused otherwise. Give the runs of one "
                        "comparison the same file. Default: attribute_classifier.keras in "
                        "the first --workdir.")
    flags.register_validator("classifier", lambda path: path is None or (
        path.endswith(".keras") and not os.path.isdir(path)),
        message="--classifier must be a .keras file, e.g. runs/attribute_classifier.keras")
    cli.define_inference_flags()


def main(argv):
    cli.start("evaluate", argv)
    values = flags.FLAGS
    try:
        settings = cli.inference_settings(values)
        # One classifier scores every run, so that their distances compare.
        classifier = values.classifier or os.path.join(values.workdir[0],
                                                       "attribute_classifier.keras")
        all_results = []
        for i, w in enumerate(values.workdir, 1):
            runs = f" ({i}/{len(values.workdir)})" if len(values.workdir) > 1 else ""
            all_results.append(evaluation.evaluate(
                w, num_heldout=values.num_heldout, num_fit=values.num_fit,
                settings=settings, baseline=values.baseline, served=values.served,
                seed=values.seed, attributes=values.attributes, classifier=classifier,
                progress=lambda message: cli.progress("evaluate", f"{w}{runs}: {message}")))
    except UserError as e:
        sys.exit(f"evaluate: error: {e}")
    print(evaluation.markdown_table(all_results))
    for w in values.workdir:
        print(f"Wrote {os.path.join(w, 'evaluation.json')}")


def run():
    """The console script `sparse-gen-evaluate`."""
    define_flags()
    cli.run("evaluate", main)


if __name__ == "__main__":
    run()
