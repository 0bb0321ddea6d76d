"""Trains the sparse generator by alternating back-propagation (sparse_gen_tf/commands/train.py).

    python train.py                          # embedded And-Or "parts" dataset
    python train.py --flagfile=celeba.flags  # the paper's CelebA setup

Rerunning the same command resumes from the latest checkpoint in --workdir.
"""

from sparse_gen_tf.commands.train import run

if __name__ == "__main__":
    run()
