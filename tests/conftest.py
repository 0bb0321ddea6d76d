"""Shared test settings and helpers: quiet TensorFlow, the commands run as a user runs them,
the tiny configurations most tests train or build, and reading TensorBoard event files.

Test files import the helpers (`from conftest import tiny_flags, run_train`); the
`commands` fixture bundles the command runners for tests that take them as a fixture.
"""

import dataclasses
import os
import subprocess
import sys
import types

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The flags of a train.py run that trains in seconds on 64 parts images: 8+8 channels,
# K = 4, 8, d = 4, two Langevin steps, a checkpoint every epoch (two steps of 32), K from
# the first step (no --topk_warmup: tests of the warm-up ask for it).
TINY_FLAGS = {"num_images": 64, "batch_size": 32, "langevin_steps": 2, "channels": "8,8",
              "topk": "4,8", "latent_dim": 4, "checkpoint_every": 1, "topk_warmup": 0}


def tiny_flags(**overrides):
    """TINY_FLAGS as a list of train.py flags, with overrides: name=value adds or replaces
    --name=value, name=None drops the flag (train.py's default then applies)."""
    values = {**TINY_FLAGS, **overrides}
    return [f"--{name}={value}" for name, value in values.items() if value is not None]


# A run on a folder of images (any number of them): batches of 16, four summary images.
TINY_TRAIN_FLAGS = tuple(tiny_flags(num_images=None, batch_size=16, num_summary_images=4))
FAST_INFERENCE_FLAGS = ("--inference_steps=3", "--restarts=2")

# Two tiny generator geometries. 32: train.py's default geometry (4x4 cells of 8x8 pixels:
# the parts scores apply), with the channels, K and d of TINY_FLAGS. 16: 16x16 images
# from a 2x2 top map (strides 2, 4), K = 8, 16: what the unit tests train in-process.
_TINY_GENERATORS = {
    32: dict(image_size=32, latent_dim=4, channels=(8, 8), topk=(4, 8)),
    16: dict(image_size=16, latent_dim=4, channels=(8, 8), topk=(8, 16),
             kernel_sizes=(4, 4), strides=(2, 4)),
}


def tiny_generator(image_size=32, **overrides):
    """A tiny GeneratorConfig of one of the two geometries above, with field overrides."""
    from sparse_gen_tf.model.generator import GeneratorConfig
    return GeneratorConfig(**{**_TINY_GENERATORS[image_size], **overrides})


def tiny_train_config(**overrides):
    """The TrainConfig of TINY_FLAGS for in-process training (trainer.train): two steps,
    no XLA, four summary images; overrides are TrainConfig fields."""
    from sparse_gen_tf.learning.langevin import LangevinConfig
    from sparse_gen_tf.training.config import TrainConfig
    config = TrainConfig(num_images=64, batch_size=32, langevin=LangevinConfig(steps=2),
                         generator=tiny_generator(), train_steps=2, jit_compile=False,
                         num_summary_images=4, topk_warmup=0.0)
    return dataclasses.replace(config, **overrides)


def run_command(*args, cwd=ROOT, timeout=300, env=None):
    """Runs `python ARGS` in a subprocess, from cwd, with the project on the path.

    env: variables to set on top of this process's; a value of None unsets one."""
    merged = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": ROOT, **(env or {})}
    merged = {k: v for k, v in merged.items() if v is not None}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          timeout=timeout, env=merged, cwd=cwd)


def load_benchmark(name):
    """The module benchmarks/<name>.py, imported as its sibling scripts import it (by
    name, with benchmarks/ on the path)."""
    import importlib
    folder = os.path.join(ROOT, "benchmarks")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return importlib.import_module(name)


def run_train(*flags, **kwargs):
    """Runs `python train.py FLAGS` as a user does (run_command's keyword arguments)."""
    return run_command(os.path.join(ROOT, "train.py"), *flags, **kwargs)


def train_ok(workdir, *flags, **kwargs):
    """Trains with `train.py --workdir=WORKDIR FLAGS`, asserts that it succeeded; returns
    workdir as a string."""
    workdir = str(workdir)
    result = run_train(f"--workdir={workdir}", *flags, **kwargs)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


def last_line(text):
    """The last non-blank line of a command's output: where a one-line error goes."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def assert_flag_error(result, message, workdir=None):
    """result is a command that stopped on its flags: no traceback, exactly one
    "PROGRAM: error: ..." line (`cli.parse_flags`), which says message; and it wrote
    nothing at workdir (if given)."""
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1 and message in errors[0], result.stderr[-2000:]
    if workdir is not None:
        assert not os.path.exists(workdir)


def summary_events(directory, recursive=True):
    """Every tf.Event in the event files in directory (and its subdirectories, unless not
    recursive), file by file in name order."""
    import tensorflow as tf
    for folder, subfolders, files in os.walk(directory):
        subfolders.sort()
        for name in sorted(files):
            if "tfevents" in name:
                yield from tf.compat.v1.train.summary_iterator(os.path.join(folder, name))
        if not recursive:
            return


def summary_values(directory, recursive=True):
    """Every summary value (tag, metadata, tensor) of summary_events(directory)."""
    for event in summary_events(directory, recursive):
        yield from event.summary.value


def tensorboard_tags(directory, recursive=True):
    """The set of summary tags written in directory's event files."""
    return {value.tag for value in summary_values(directory, recursive)}


# The start of a `python -c` script that trains under a MirroredStrategy over two logical
# CPUs (which must be set up before TensorFlow starts, hence the subprocess): the tiny
# 16x16 generator `config`, n = 16 images and a dataset of them in global batches of 8.
MIRRORED_SETUP = f"""
import sys
import keras, numpy as np, tensorflow as tf
from sparse_gen_tf.training import distribute
strategy = distribute.make_strategy("mirrored", cpu_devices=2)
from sparse_gen_tf import AlternatingBackprop, Generator, GeneratorConfig, LangevinConfig

config = GeneratorConfig(**{_TINY_GENERATORS[16]!r})
n = 16
images = tf.random.stateless_uniform([n, 16, 16, 3], [0, 1], -1, 1)
dataset = tf.data.Dataset.from_tensor_slices((tf.range(n), images)).batch(8)
"""


def run_mirrored(body, out):
    """Runs MIRRORED_SETUP + body, which saves its results with np.savez(sys.argv[1]),
    with out as sys.argv[1]; returns the saved arrays as a dict."""
    import numpy as np
    result = run_command("-c", MIRRORED_SETUP + body, out)
    assert result.returncode == 0, result.stderr[-3000:]
    return dict(np.load(out))


def assert_mirrored_weights_match(run):
    """A run_mirrored result trained two replicas and one device from the same start: the
    replicas were two, and every "mirrored_w<i>" weight equals its "single_w<i>"."""
    import numpy as np
    assert run["replicas"] == 2
    weights = sorted(k for k in run if k.startswith("single_w"))
    assert weights
    for key in weights:
        np.testing.assert_allclose(run[key.replace("single", "mirrored")], run[key],
                                   rtol=1e-4, atol=1e-5, err_msg=key)


@pytest.fixture(scope="session")
def commands():
    """The project's commands as a user types them: train, explain, evaluate, export."""
    return types.SimpleNamespace(
        root=ROOT, run=run_command, last_line=last_line, tiny=TINY_TRAIN_FLAGS,
        fast_inference=FAST_INFERENCE_FLAGS, train=run_train,
        explain=lambda *a, **k: run_command("-m", "sparse_gen_tf.commands.explain", *a, **k),
        evaluate=lambda *a, **k: run_command("-m", "sparse_gen_tf.commands.evaluate", *a, **k),
        export=lambda *a, **k: run_command(
            os.path.join(ROOT, "export", "export_saved_model.py"), *a, **k))


@pytest.fixture
def host_gpus(monkeypatch):
    """Fakes the host that AlternatingBackprop.compile sees: host_gpus(True) makes
    tf.config.list_logical_devices("GPU") list one GPU, host_gpus(False) none; other
    device types are answered as they are."""
    import tensorflow as tf
    real = tf.config.list_logical_devices

    def fake(present):
        def list_logical_devices(device_type=None):
            if device_type == "GPU":
                return [tf.config.LogicalDevice("/device:GPU:0", "GPU")] if present else []
            return real(device_type)
        monkeypatch.setattr(tf.config, "list_logical_devices", list_logical_devices)

    return fake


@pytest.fixture(autouse=True)
def seeded():
    """Seeds Python, NumPy and TensorFlow before every test. Keras initialisers are
    unseeded, so without this every process builds other weights, and a test of a
    statistical property (Langevin lowers the energy, training lowers the error) passes or
    fails with them."""
    import keras
    keras.utils.set_random_seed(0)
