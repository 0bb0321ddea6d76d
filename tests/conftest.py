"""Shared test settings and helpers: quiet TensorFlow, the commands run as a user runs them."""

import os
import subprocess
import sys
import types

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Flags of a run that trains in seconds: 8+8 channels, d = 4, two Langevin steps.
TINY_TRAIN_FLAGS = ("--batch_size=16", "--langevin_steps=2", "--channels=8,8", "--topk=4,8",
                    "--latent_dim=4", "--checkpoint_every=1", "--num_summary_images=4")
FAST_INFERENCE_FLAGS = ("--inference_steps=3", "--restarts=2")


def run_command(*args, cwd=ROOT, timeout=300):
    """Runs `python ARGS` in a subprocess, from cwd, with the project on the path."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": ROOT}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=cwd)


def last_line(text):
    """The last non-blank line of a command's output: where a one-line error goes."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


@pytest.fixture(scope="session")
def commands():
    """The project's commands as a user types them: train, explain, evaluate, export."""
    return types.SimpleNamespace(
        root=ROOT, run=run_command, last_line=last_line, tiny=TINY_TRAIN_FLAGS,
        fast_inference=FAST_INFERENCE_FLAGS,
        train=lambda *a, **k: run_command(os.path.join(ROOT, "train.py"), *a, **k),
        explain=lambda *a, **k: run_command("-m", "sparse_gen_tf.explain", *a, **k),
        evaluate=lambda *a, **k: run_command("-m", "sparse_gen_tf.evaluate", *a, **k),
        export=lambda *a, **k: run_command(
            os.path.join(ROOT, "export", "export_saved_model.py"), *a, **k))


@pytest.fixture(autouse=True)
def seeded():
    """Seeds Python, NumPy and TensorFlow before every test. Keras initialisers are
    unseeded, so without this every process builds other weights, and a test of a
    statistical property (Langevin lowers the energy, training lowers the error) passes or
    fails with them."""
    import keras
    keras.utils.set_random_seed(0)
