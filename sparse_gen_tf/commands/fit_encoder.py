"""The `fit_encoder` command: fits the inference network q(z | Y) of a trained run to its
generator (amortized MAP, learning/amortized.py), for the amortized inference (export
--reconstruct=amortized, explain and evaluate --inference=amortized).

    python -m sparse_gen_tf.commands.fit_encoder --workdir=runs/parts
    sparse-gen-fit-encoder --workdir=runs/parts

writes WORKDIR/checkpoints/ckpt-N.encoder.keras beside the latest checkpoint ckpt-N
(`run.write_encoder`, atomically), which every command that opens the run then uses. It
holds the network's architecture and weights only (model/encoder.py). A run trained with
--encoder has a network already; fitting one here replaces it for that checkpoint.
"""

from sparse_gen_tf import console  # noqa: F401  (first: quiets TensorFlow as it loads)

import sys

from absl import flags

from sparse_gen_tf.commands import cli
from sparse_gen_tf.errors import UserError
from sparse_gen_tf.model.encoder import EncoderConfig
from sparse_gen_tf.training import encoder


def define_flags():
    defaults = EncoderConfig()
    flags.DEFINE_string("workdir", None, "Training run whose latest checkpoint the "
                        "network learns to invert, on the run's training images.",
                        required=True)
    flags.DEFINE_integer("steps", 2000, "Adam steps.", lower_bound=1)
    flags.DEFINE_integer("batch_size", 64, "Images per step.", lower_bound=1)
    flags.DEFINE_float("learning_rate", defaults.learning_rate, "Initial Adam learning "
                       "rate, cosine-decayed to a tenth.", lower_bound=0.0)
    flags.DEFINE_list("encoder_channels", ",".join(map(str, defaults.channels)),
                      "Channels of each conv (4x4, stride 2), image side first; default "
                      "the run's --encoder_channels if it trained a network.")
    flags.DEFINE_integer("seed", 0, "Seeds the initial weights and the shuffling.",
                         lower_bound=0)
    flags.register_validator("learning_rate", lambda v: v > 0,
                             message="--learning_rate must be > 0 (try 0.001)")
    flags.register_validator(
        "encoder_channels", lambda v: bool(v) and all(c.isdigit() and int(c) > 0 for c in v),
        message="--encoder_channels must be a comma list of positive integers")


def main(argv):
    cli.start("fit_encoder", argv)
    values = flags.FLAGS
    cli.progress("fit_encoder", f"fitting the inference network of {values.workdir} "
                 f"({values.steps} steps)")
    try:
        path, loss = encoder.fit_workdir(
            values.workdir, steps=values.steps, batch_size=values.batch_size,
            learning_rate=values.learning_rate, seed=values.seed,
            channels=(tuple(int(c) for c in values.encoder_channels)
                      if values["encoder_channels"].present else None))
    except UserError as e:
        sys.exit(f"fit_encoder: error: {e}")
    print(f"Wrote {path} (-log p(E(Y), Y) of Eq. 11 in the last epoch: {loss:.1f} per "
          "image)")


def run():
    """The console script `sparse-gen-fit-encoder`."""
    define_flags()
    cli.run("fit_encoder", main)


if __name__ == "__main__":
    run()
