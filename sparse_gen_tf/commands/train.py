"""The `train` command: trains the sparse generator by alternating back-propagation.

    python train.py                          # embedded And-Or "parts" dataset
    python train.py --flagfile=celeba.flags  # the paper's CelebA setup
    sparse-gen-train --flagfile=celeba.flags

Rerunning the same command resumes from the latest checkpoint in --workdir. The flags
are defined in `training/flags.py`. It ends by saying what it wrote and what to run next
(`summary`).
"""

from sparse_gen_tf import console  # noqa: F401  (first: quiets TensorFlow as it loads)

import os
import sys

from sparse_gen_tf.commands import cli
from sparse_gen_tf.errors import UserError
from sparse_gen_tf.training import flags as train_flags
from sparse_gen_tf.training import run as run_lib
from sparse_gen_tf.training import trainer


def main(argv):
    cli.start("train.py", argv, quiet=False)  # training logs its progress
    try:
        config = train_flags.train_config()
        trainer.train(config)
    except UserError as e:
        sys.exit(f"train.py: error: {e}")
    except KeyboardInterrupt:
        sys.exit("train.py: interrupted; rerun the same command to resume from the last "
                 "checkpoint")
    print(summary(config.workdir))


def summary(workdir):
    """What a finished run wrote, and the commands that use it next."""
    checkpoint = run_lib.latest_checkpoint(workdir)
    w = f"--workdir={workdir}"
    tb = os.path.join(workdir, "tb")
    name = os.path.basename(os.path.normpath(workdir))
    return "\n".join([
        f"Trained {workdir}:",
        f"  checkpoint   {checkpoint or '(none written)'}",
        f"  TensorBoard  {tb}   (tensorboard --logdir={tb})",
        f"  settings     {os.path.join(workdir, run_lib.CONFIG_FILE)}, "
        f"{os.path.join(workdir, run_lib.FLAGS_FILE)}",
        "Next:",
        f"  {cli.SCRIPTS['explain']} {w}     # parse graphs, kernels, dashboard",
        f"  {cli.SCRIPTS['evaluate']} {w}    # scores as a markdown table",
        f"  {cli.SCRIPTS['export']} {w} --export_base=exports/{name}   # SavedModel "
        "for TF Serving",
    ])


def run():
    """`python train.py` and the console script `sparse-gen-train`."""
    cli.run("train.py", main)


if __name__ == "__main__":
    run()
