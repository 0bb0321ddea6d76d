"""Exports the latest checkpoint of a training run as a SavedModel for TF Serving.

    python export/export_saved_model.py --workdir=runs/parts --export_base=exports/sparse_gen

The command is sparse_gen_tf/commands/export.py (also the console script `sparse-gen-export`); this
file lets it run from a checkout, beside the TF Serving files it produces.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sparse_gen_tf.commands.export import run

if __name__ == "__main__":
    run()
