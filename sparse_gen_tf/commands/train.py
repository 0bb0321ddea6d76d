"""The `train` command: trains the sparse generator by alternating back-propagation.

    python train.py                          # embedded And-Or "parts" dataset
    python train.py --flagfile=celeba.flags  # the paper's CelebA setup
    sparse-gen-train --flagfile=celeba.flags

Rerunning the same command resumes from the latest checkpoint in --workdir. The flags
are defined in `training/flags.py`.
"""

import sys

from absl import app

from sparse_gen_tf.commands import cli
from sparse_gen_tf.errors import UserError
from sparse_gen_tf.training import flags as train_flags
from sparse_gen_tf.training import trainer


def main(argv):
    cli.start("train.py", argv, quiet=False)  # training logs its progress
    try:
        trainer.train(train_flags.train_config())
    except UserError as e:
        sys.exit(f"train.py: error: {e}")
    except KeyboardInterrupt:
        sys.exit("train.py: interrupted; rerun the same command to resume from the last "
                 "checkpoint")


def run():
    """`python train.py` and the console script `sparse-gen-train`."""
    app.run(main)


if __name__ == "__main__":
    run()
