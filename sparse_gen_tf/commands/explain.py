"""The `explain` command: writes the explanation of a trained run as files.

    python -m sparse_gen_tf.commands.explain --workdir=runs/parts [--output_dir=DIR]
    sparse-gen-explain --workdir=runs/parts

The files it writes are listed in `reports/report.py`.
"""

from sparse_gen_tf import console  # noqa: F401  (first: quiets TensorFlow as it loads)

import os
import sys

from absl import flags

from sparse_gen_tf.commands import cli
from sparse_gen_tf.errors import UserError
from sparse_gen_tf.reports import report


def define_flags():
    flags.DEFINE_string("workdir", None, "Training run to explain.", required=True)
    flags.DEFINE_string("output_dir", None, "Where to write (default WORKDIR/explain).")
    flags.DEFINE_integer("num_samples", 4, "Samples from the run's prior to parse.", lower_bound=0)
    flags.DEFINE_integer("num_images", 4, "Held-out images to infer and parse.",
                         lower_bound=0)
    flags.DEFINE_integer("seed", 0, "Seeds the samples and the inference.", lower_bound=0)
    flags.DEFINE_bool("html", True, "Also write index.html, the offline unit dashboard.")
    cli.define_inference_flags()


def main(argv):
    cli.start("explain", argv)
    values = flags.FLAGS
    try:
        path = report.explain(values.workdir, values.output_dir,
                              num_samples=values.num_samples, num_images=values.num_images,
                              seed=values.seed, settings=cli.inference_settings(values),
                              html=values.html,
                              progress=lambda message: cli.progress("explain", message))
    except UserError as e:
        sys.exit(f"explain: error: {e}")
    files = sorted(os.listdir(path))
    print(f"Wrote the explanation to {path} ({len(files)} files"
          + (f"; open {os.path.join(path, 'index.html')} in a browser)"
             if "index.html" in files else ")"))


def run():
    """The console script `sparse-gen-explain`."""
    define_flags()
    cli.run("explain", main)


if __name__ == "__main__":
    run()
