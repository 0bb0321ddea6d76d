"""What every command (train.py, explain, evaluate) does first, before its own work."""

import sys

from absl import flags, logging


def start(program, argv, quiet=True):
    """Refuses stray positional arguments in one line; optionally quiets absl logging.

    quiet: unless --verbosity was given, show only errors, since TensorFlow's INFO and
    retracing WARNING lines are noise in a command whose output is its result.
    """
    if len(argv) > 1:
        sys.exit(f"{program}: unexpected arguments {' '.join(argv[1:])}; flags look like "
                 "--name=value")
    if quiet and not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.ERROR)
