"""A training run on disk, and the one way every command opens it.

    workdir/config.json     the TrainConfig, nested as `dataclasses.asdict` gives it, plus
                            "num_examples": how many images the run really trained on
                            (one persistent chain each), and "format_version"
    workdir/flags.txt       the same settings as a flagfile (train.py's flat flags)
    workdir/checkpoints/    tf.train checkpoints (`checkpoint_for`), and beside a
                            checkpoint ckpt-N, ckpt-N.encoder.keras: an inference
                            network fitted to it after training (`write_encoder`)

`load_run(workdir)` is used by explain, evaluate, export and the benchmarks. It takes the
workdir it is given as the truth (a run may have been copied or moved since training, or
be named relative to another current directory) and the number of chains from the
checkpoint itself, so a folder smaller than --num_images opens like any other run.

config.json format 1 (no "format_version"; runs trained before the config was nested)
is flat, its keys train.py's flag names; it still reads, and so does its flags.txt.
"""

import dataclasses
import json
import os

import keras
import tensorflow as tf

from sparse_gen_tf.training import distribute
from sparse_gen_tf.learning.abp import AlternatingBackprop
from sparse_gen_tf.training import config as run_config
from sparse_gen_tf.training.config import TrainConfig
from sparse_gen_tf.learning.cooperative import CooperativeLearning
from sparse_gen_tf.data import pipeline
from sparse_gen_tf.model.descriptor import Descriptor
from sparse_gen_tf.model.encoder import Encoder
from sparse_gen_tf.errors import UserError
from sparse_gen_tf.model.generator import Generator

CONFIG_FILE = "config.json"
# 1: flat, keyed by flag name (before the nesting); 2: nested.
FORMAT_VERSION = 2
FLAGS_FILE = "flags.txt"
CHECKPOINT_DIR = "checkpoints"


def write_atomically(path, text):
    """Writes text to path through a temporary file and a rename."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def read_saved(workdir):
    """(TrainConfig, num_examples or None) saved in workdir, or (None, None) if none.

    Reads both formats of config.json. Keys that TrainConfig does not know (another
    version's) are ignored, and missing ones take their defaults.
    """
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        return None, None
    try:
        with open(path) as f:
            values = json.load(f)
        if not isinstance(values, dict):
            raise TypeError("not a JSON object")
        version = values.get("format_version", 1)
        if version == 1:
            config = run_config.from_flat(values)
        elif version == FORMAT_VERSION:
            config = run_config.from_dict(values)
        else:
            raise UserError(f"{path} has format_version {version!r}, which this version of "
                            f"sparse_gen_tf does not know (it writes {FORMAT_VERSION}); "
                            "open the run with the version that trained it")
    except (ValueError, TypeError) as e:  # JSONDecodeError is a ValueError
        raise UserError(f"{path} is not a training run's config ({e}); point --workdir at "
                        "a directory written by train.py") from None
    return config, values.get("num_examples")


def read_config(workdir):
    """The TrainConfig saved in workdir, or None when there is none."""
    return read_saved(workdir)[0]


def _flag_text(value):
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def write_config(config, num_examples):
    """Writes workdir/config.json (with num_examples) and workdir/flags.txt, a flagfile
    that reproduces config: `python train.py --flagfile=WORKDIR/flags.txt`."""
    os.makedirs(config.workdir, exist_ok=True)
    values = {"format_version": FORMAT_VERSION, **dataclasses.asdict(config),
              "num_examples": int(num_examples)}
    write_atomically(os.path.join(config.workdir, CONFIG_FILE), json.dumps(values, indent=2))
    write_atomically(os.path.join(config.workdir, FLAGS_FILE), "".join(
        f"--{flag}={_flag_text(value)}\n"
        for flag, value in run_config.flag_values(config).items() if value is not None))


def build_model(config, num_examples):
    """The AlternatingBackprop model for config (CooperativeLearning with a descriptor),
    compiled with Adam, for the strategy in scope. num_examples: one chain per image."""
    jit_step, jit_langevin = distribute.compile_options(tf.distribute.get_strategy(),
                                                        config.jit_compile)
    learner = dict(langevin=config.langevin, seed=config.seed, jit_langevin=jit_langevin,
                   prior=config.prior,
                   sparse_kernels={"auto": None, "on": True, "off": False}[config.sparse_kernels])
    generator = Generator(config.generator)
    if config.encoder is not None:
        learner["encoder"] = Encoder(config.encoder, latent_dim=config.generator.latent_dim,
                                     image_size=config.generator.image_size)
    if config.descriptor is not None:
        # CooperativeLearning builds its descriptor optimizer's slots itself, so that a
        # checkpoint restores them eagerly like the generator's below.
        model = CooperativeLearning(
            generator, Descriptor(config.descriptor, image_size=config.generator.image_size),
            num_examples, **learner)
    else:
        model = AlternatingBackprop(generator, num_examples, **learner)
    # Cosine decay to a tenth: fast early progress, then a small rate to settle the kernels.
    # It is a function of the optimizer's step, so a resumed run continues the schedule.
    learning_rate = keras.optimizers.schedules.CosineDecay(
        config.learning_rate, decay_steps=config.train_steps, alpha=0.1)
    optimizer = keras.optimizers.Adam(learning_rate)
    if keras.mixed_precision.global_policy().name == "mixed_float16":
        # The loss sums ‖Y - g(z)‖² / 2σ² over pixels, so its gradients are large, not
        # small: Keras' default loss scale 2^15 overflows float16 and skips the first
        # dozen steps. Start unscaled; dynamic scaling still raises it when it can.
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer, initial_scale=1.0)
    model.compile(optimizer=optimizer, jit_compile=jit_step)
    # Build the optimizer's slots now, so that a checkpoint restores them eagerly.
    model.optimizer.build(model.generator.trainable_weights)
    return model


def checkpoint_for(model):
    """(tf.train.Checkpoint of everything a resumed run needs, its epoch counter)."""
    epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
    return tf.train.Checkpoint(model=model, optimizer=model.optimizer, epoch=epoch), epoch


def latest_checkpoint(workdir):
    """The path of workdir's latest checkpoint, or None."""
    return tf.train.latest_checkpoint(os.path.join(workdir, CHECKPOINT_DIR))


def chains_in_checkpoint(path):
    """How many persistent chains (training examples) the checkpoint at path holds."""
    shapes = tf.train.load_checkpoint(path).get_variable_to_shape_map()
    chains = [shape for name, shape in shapes.items()
              if name.startswith("model/chains/") and "OPTIMIZER_SLOT" not in name]
    if len(chains) != 1:
        raise UserError(f"{path} holds no persistent chains; it was not written by "
                        "train.py")
    return int(chains[0][0])


def prior_in_checkpoint(path):
    """True when the checkpoint at path holds the model's prior (`model.prior`); runs
    trained before the prior was part of the model have none."""
    names = tf.train.load_checkpoint(path).get_variable_to_shape_map()
    return any(name.startswith("model/prior/") for name in names)


ENCODER_SUFFIX = ".encoder.keras"


def encoder_path(checkpoint):
    """Where the inference network fitted after training to the checkpoint at path
    `checkpoint` lives: beside it, <checkpoint>.encoder.keras."""
    return checkpoint + ENCODER_SUFFIX


def write_encoder(encoder, checkpoint):
    """Saves encoder (its architecture and weights only, no optimizer state) as the
    inference network of the checkpoint at path `checkpoint`, atomically (a temporary
    file, then a rename); returns its path."""
    # A copy without the optimizer that fitting compiled into it.
    plain = Encoder.from_config(encoder.get_config())
    plain.set_weights(encoder.get_weights())
    path = encoder_path(checkpoint)
    tmp = f"{checkpoint}.tmp-{os.getpid()}{ENCODER_SUFFIX}"
    try:
        plain.save(tmp)
        os.replace(tmp, path)
    except OSError as e:
        raise UserError(f"could not write {path} ({e.strerror}); check the space and "
                        "permissions of the run's checkpoints directory") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def read_encoder(checkpoint):
    """The inference network fitted to the checkpoint at path `checkpoint`
    (`write_encoder`), or None if there is none."""
    path = encoder_path(checkpoint)
    if not os.path.exists(path):
        return None
    try:
        encoder = keras.models.load_model(path, compile=False)
    except (ValueError, OSError, TypeError, KeyError) as e:
        raise UserError(f"cannot read the inference network {path} ({type(e).__name__}); "
                        "delete it and fit it again with sparse-gen-fit-encoder") from None
    if not isinstance(encoder, Encoder):
        raise UserError(f"{path} is not an inference network; delete it and fit one with "
                        "python -m sparse_gen_tf.commands.fit_encoder")
    return encoder


@dataclasses.dataclass
class Run:
    """An opened training run.

    config: its TrainConfig, with workdir set to where the run is now.
    model: the AlternatingBackprop (or CooperativeLearning) model, restored, with its
      prior (`model.prior`, fitted to its chains) and its inference network
      (`model.encoder`: the one fitted after training to this checkpoint if there is
      one, else the one trained with the run (--encoder), else None).
    checkpoint: the path of the checkpoint it was restored from.
    num_examples: the number of training images (= persistent chains).
    """
    config: TrainConfig
    model: object
    checkpoint: str
    num_examples: int

    @property
    def step(self):
        return int(self.model.optimizer.iterations.numpy())

    def data(self):
        """The run's images as at training time: `pipeline.TrainingData` (train, held-out)."""
        return pipeline.load_for(self.config)


def load_run(workdir):
    """Opens the training run in workdir at its latest checkpoint: a `Run`.

    Raises UserError, in one line, if workdir holds no run or no checkpoint, or if the
    checkpoint does not match the architecture in config.json.
    """
    config, num_examples = read_saved(workdir)
    if config is None:
        raise UserError(f"no training run in {workdir} (no {CONFIG_FILE}); train first "
                        f"with python train.py --workdir={workdir}")
    # The run may have been moved since training: its checkpoints are where it is now.
    config = dataclasses.replace(config, workdir=workdir)
    path = latest_checkpoint(workdir)
    if path is None:
        raise UserError(f"no checkpoint in {os.path.join(workdir, CHECKPOINT_DIR)}; train "
                        f"first with python train.py --workdir={workdir}")
    try:
        in_checkpoint = chains_in_checkpoint(path)
    except (tf.errors.OpError, ValueError) as e:
        raise UserError(f"cannot read the checkpoint {path} ({type(e).__name__}); it may be "
                        "incomplete: delete it to fall back to the one before") from None
    if num_examples is not None and num_examples != in_checkpoint:
        raise UserError(f"{CONFIG_FILE} in {workdir} says {num_examples} training images "
                        f"but its checkpoint holds {in_checkpoint} chains; the two come "
                        "from different runs")
    model = build_model(config, in_checkpoint)
    checkpoint, _ = checkpoint_for(model)
    try:
        checkpoint.restore(path).expect_partial()
    except (ValueError, tf.errors.OpError) as e:
        detail = str(e).splitlines()[0][:200]
        raise UserError(f"the checkpoint {path} does not fit the architecture in "
                        f"{os.path.join(workdir, CONFIG_FILE)} ({detail}); use the "
                        "config.json it was trained with") from None
    encoder = read_encoder(path)
    if encoder is not None:
        if (encoder.latent_dim, encoder.image_size) != (config.generator.latent_dim,
                                                        config.generator.image_size):
            raise UserError(f"{encoder_path(path)} was fitted to another architecture; "
                            "delete it and fit it again with python -m "
                            "sparse_gen_tf.commands.fit_encoder")
        model.encoder = encoder
    if not model.prior.fitted:
        # A checkpoint from before the prior was saved with the model: fit it now, from
        # the restored chains, as the checkpoint callback would have.
        model.fit_prior()
    return Run(config, model, path, in_checkpoint)


__all__ = ["Run", "build_model", "checkpoint_for", "chains_in_checkpoint", "encoder_path",
           "latest_checkpoint", "load_run", "prior_in_checkpoint", "read_config",
           "read_encoder", "read_saved", "write_config", "write_encoder"]
