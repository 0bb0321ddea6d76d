"""A training run on disk, and the one way every command opens it.

    workdir/config.json     the TrainConfig, nested as `dataclasses.asdict` gives it, plus
                            "num_examples": how many images the run really trained on
                            (one persistent chain each), and "format_version"
    workdir/flags.txt       the same settings as a flagfile (train.py's flat flags)
    workdir/checkpoints/    tf.train checkpoints (`checkpoint_for`), and beside a
                            checkpoint ckpt-N, ckpt-N.encoder.keras: an inference
                            network fitted to it after training (`write_encoder`), and
                            ckpt-N.prior_stale when its prior was fitted to an earlier
                            generator (`mark_prior_stale`)

`open_run(workdir)` opens a trained run for explain, evaluate, export, fit_encoder and the
benchmarks: a `TrainedModel` of the generator, prior, chains and inference network alone
(`learner=True` adds the whole learner). `resume(config, ...)` builds the learner of a run
and restores it for train.py to go on. Both take the workdir they are given as the truth
(a run may have been copied or moved since training, or be named relative to another
current directory) and the number of chains from the checkpoint itself, so a folder
smaller than --num_images opens like any other run.

config.json format 1 (no "format_version"; runs trained before the config was nested)
is flat, its keys train.py's flag names; it still reads, and so does its flags.txt.
"""

import dataclasses
import json
import os

import keras
import numpy as np
import tensorflow as tf

from sparse_gen_tf.training import distribute
from sparse_gen_tf.learning import gradient_path
from sparse_gen_tf.learning.abp import AlternatingBackprop
from sparse_gen_tf.training import config as run_config
from sparse_gen_tf.training.config import TrainConfig
from sparse_gen_tf.learning.cooperative import CooperativeLearning
from sparse_gen_tf.data import pipeline
from sparse_gen_tf.model.descriptor import Descriptor
from sparse_gen_tf.model.encoder import Encoder
from sparse_gen_tf.errors import UserError
from sparse_gen_tf.model.generator import Generator
from sparse_gen_tf.model import blocks
from sparse_gen_tf.model import prior as prior_lib

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
                   topk_warmup_steps=run_config.topk_warmup_steps(config),
                   topk_warmup_start=run_config.topk_warmup_start(config),
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


def prior_in_checkpoint(path, prior=None):
    """True when the checkpoint at path holds the model's prior (`model.prior`); runs
    trained before the prior was part of the model have none. With prior (the prior
    layer it would be restored into): only when it holds every variable of it, so that
    a prior saved before one was added (the grammar prior's kept shares) is fitted again
    rather than restored in part."""
    names = tf.train.load_checkpoint(path).get_variable_to_shape_map()
    if prior is None:
        return any(name.startswith("model/prior/") for name in names)
    return all(f"model/prior/{variable.name}/.ATTRIBUTES/VARIABLE_VALUE" in names
               for variable in prior.weights)


def saved_prior(config, path):
    """The --prior whose state the checkpoint at path holds, for a run of config: the
    config's, but "nodes" for a run saved with `grammar` before the grammar prior sampled
    blocks of top OR nodes (its checkpoint holds NodeGrammarPrior's centroids, not
    BlockGrammarPrior's blocks), so that old runs open with the prior they were fitted
    with. A later fit (resume's checkpoints) refits that same prior."""
    names = tf.train.load_checkpoint(path).get_variable_to_shape_map()
    if (config.prior == "grammar" and "model/prior/centroids/.ATTRIBUTES/VARIABLE_VALUE"
            in names and "model/prior/blocks/.ATTRIBUTES/VARIABLE_VALUE" not in names):
        return "nodes"
    return config.prior


STALE_PRIOR_SUFFIX = ".prior_stale"


def mark_prior_stale(checkpoint, stale=True):
    """Marks the checkpoint at path `checkpoint` as holding a stale prior (stale=True) or
    not: the marker <checkpoint>.prior_stale, written atomically, says that the prior's
    variables in it were fitted to the chains of an earlier generator (train.py fits
    the prior only every --figures_every epochs). Readers then fit the prior again from
    the checkpoint's chains, as for a checkpoint without one (`open_run`, `resume`)."""
    marker = checkpoint + STALE_PRIOR_SUFFIX
    if stale:
        os.makedirs(os.path.dirname(marker) or ".", exist_ok=True)  # before the first save
        write_atomically(marker, "The prior in this checkpoint was fitted to an earlier "
                         "generator's chains; it is fitted again when the run is opened.\n")
    elif os.path.exists(marker):
        os.remove(marker)


def prior_is_stale(checkpoint):
    """True when the checkpoint at path `checkpoint` is marked by `mark_prior_stale`."""
    return os.path.exists(checkpoint + STALE_PRIOR_SUFFIX)


def remove_stale_marks(directory, keep):
    """Removes the markers in directory of checkpoints not in keep (paths; the
    CheckpointManager's `checkpoints`, after it rotated the oldest away)."""
    kept = {os.path.basename(path) for path in keep}
    for name in os.listdir(directory):
        if (name.endswith(STALE_PRIOR_SUFFIX)
                and name[:-len(STALE_PRIOR_SUFFIX)] not in kept):
            try:
                os.remove(os.path.join(directory, name))
            except FileNotFoundError:  # another process cleaned up first
                pass


def prior_fitted_in_checkpoint(path, config=None):
    """True when the checkpoint at path holds a prior fitted to its own generator: one is
    saved (`prior_in_checkpoint`; with the run's config, every variable of the prior it
    opens with) and it is not marked stale (`prior_is_stale`)."""
    prior = (None if config is None
             else prior_lib.make(saved_prior(config, path), config.generator))
    return prior_in_checkpoint(path, prior) and not prior_is_stale(path)


def has_prior_to_fit(config):
    """False for a prior with nothing to fit from the chains (N(0, I))."""
    return not prior_lib.make(config.prior, config.generator).fitted


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


def _node(**children):
    """A bare object-graph node whose children are `children` (tf.Module tracks every
    attribute it is given, lists as numbered children)."""
    node = tf.Module()
    for name, child in children.items():
        setattr(node, name, child)
    return node


def _read_checkpoint(path):
    """tf.train.load_checkpoint(path), or UserError in one line if it cannot be read."""
    try:
        return tf.train.load_checkpoint(path)
    except (tf.errors.OpError, ValueError) as e:
        raise UserError(f"cannot read the checkpoint {path} ({type(e).__name__}); it may be "
                        "incomplete: delete it to fall back to the one before") from None


def _restore(checkpoint, path, config_path, strict):
    """checkpoint.restore(path); strict: every object in checkpoint must be in the file.
    A mismatch is the architecture's: UserError in one line."""
    status = None
    try:
        status = checkpoint.restore(path)
        if strict:
            status.assert_existing_objects_matched()
        status.expect_partial()
    except (ValueError, AssertionError, tf.errors.OpError) as e:
        if status is not None:
            # Else TensorFlow lists every unrestored value when the checkpoint is
            # deleted, after the one-line error.
            status.expect_partial()
        detail = str(e).splitlines()[0][:200]
        raise UserError(f"the checkpoint {path} does not fit the architecture in "
                        f"{config_path} ({detail}); use the config.json it was trained "
                        "with") from None
    return status


# eq=False: compared, and hashed, as the object it is (`inference` caches compiled
# functions per model).
@dataclasses.dataclass(eq=False)
class TrainedModel:
    """A training run opened at a checkpoint (`open_run`): what explain, evaluate, export
    and fit_encoder use of it. Its attributes are those of the learner
    (AlternatingBackprop) that they read, so it stands in for one in `inference`,
    `serving` and the reports.

    config: the run's TrainConfig, with workdir set to where the run is now.
    generator: the `Generator` g(z; θ) at the checkpoint.
    prior: where samples come from (`model.prior`), fitted to the chains.
    chains: the persistent chains, a variable [num_examples, d]: the training images'
      codes and the starting points of `reconstruct`'s search.
    encoder: the inference network: the one fitted after training to this checkpoint if
      there is one (`read_encoder`), else the one trained with the run (--encoder), else
      None.
    checkpoint: the path of the checkpoint it was restored from; step: its training step.
    learner: the whole AlternatingBackprop (or CooperativeLearning) model with its
      optimizers, restored, when `open_run(learner=True)` asked for it; else None.
    """
    config: TrainConfig
    generator: Generator
    prior: object
    chains: keras.Variable
    encoder: object
    checkpoint: str
    step: int
    learner: object = None

    @property
    def langevin(self):
        """L, δ and σ of Eq. (10)-(11) the run trained with (a `LangevinConfig`)."""
        return self.config.langevin

    @property
    def num_examples(self):
        """The number of training images (= persistent chains)."""
        return int(self.chains.shape[0])

    def data(self):
        """The run's images as at training time: `pipeline.TrainingData` (train, held-out)."""
        return pipeline.load_for(self.config)


def _prior_images(config):
    """The run's first training images in [-1, 1] that the grammar prior's fit checks its
    configurations against (as the trainer gives them), or None when the run's data
    cannot be loaded any more (the fit then keeps every configuration)."""
    try:
        images = pipeline.load_for(config).images[:blocks.MAX_REFERENCE]
    except UserError:
        return None
    return pipeline.to_model_range(images).numpy()


def _restore_parts(config, path, num_examples):
    """(generator, prior or None, chains, encoder or None, step) restored from the
    checkpoint at path, without the learner, its optimizers or its descriptor.

    The checkpoint's object graph reaches the transposed convolutions' weights (and
    the trained encoder's convolutions) only through the optimizers' variable lists,
    not through the generator: Keras tracks those layers for itself, not as
    checkpoint dependencies. So the nodes rebuilt here are the learner's own paths,
    model/{generator, chains, prior, encoder, encoder_optimizer/_trainable_variables}
    and optimizer/{_trainable_variables, _iterations}, with the lists in the order
    in which `build_model` built the optimizers (the generator's, the encoder's
    trainable_weights).
    """
    generator = Generator(config.generator)
    # A Keras variable, as the learner's chains are (`chains.value` reads it the same).
    chains = keras.Variable(np.zeros([num_examples, config.generator.latent_dim], np.float32),
                            trainable=False, name="chains")
    # The step is the optimizer's, or under mixed_float16 its LossScaleOptimizer's inner
    # optimizer's (`iterations` delegates to it; the outer counter stays at 0).
    dtypes = tf.train.load_checkpoint(path).get_variable_to_dtype_map()
    inner = "optimizer/inner_optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"
    outer = "optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"
    step = tf.Variable(0, dtype=dtypes.get(inner, dtypes.get(outer, tf.int64)),
                       trainable=False, name="iterations")
    counter = (dict(inner_optimizer=_node(_iterations=step)) if inner in dtypes
               else dict(_iterations=step))
    model = dict(generator=generator, chains=chains)
    prior = prior_lib.make(saved_prior(config, path), config.generator)
    if prior_in_checkpoint(path, prior):
        model["prior"] = prior
    encoder = None
    if config.encoder is not None:
        encoder = Encoder(config.encoder, latent_dim=config.generator.latent_dim,
                          image_size=config.generator.image_size)
        model["encoder"] = encoder
        model["encoder_optimizer"] = _node(
            _trainable_variables=list(encoder.trainable_weights))
    checkpoint = tf.train.Checkpoint(
        model=_node(**model),
        optimizer=_node(_trainable_variables=list(generator.trainable_weights), **counter))
    _restore(checkpoint, path, os.path.join(config.workdir, CONFIG_FILE), strict=True)
    return generator, prior, chains, encoder, int(step.numpy())


def _for_inference(generator, config):
    """Sets how generator's TopK layers find their thresholds for the run's --jit_compile,
    as the learner's compile does (`gradient_path.choose`), without the sparse kernels:
    inference batches many chains through XLA-compiled functions, where the dense path
    serves. The choice changes only speed, not results."""
    gradient_path.choose(generator, xla=config.jit_compile, sparse_kernels=False).apply(
        generator)


def open_run(workdir, *, learner=False, fit_prior=True):
    """Opens the training run in workdir at its latest checkpoint: a `TrainedModel`.

    It restores only the generator, the prior, the chains and the inference network;
    learner=True restores the whole learner too (`TrainedModel.learner`, with its
    optimizers and descriptor; the other attributes are then the learner's).
    The workdir given is the truth (the run may have been moved since training), and
    the number of chains comes from the checkpoint itself.

    fit_prior: what to do with a checkpoint whose prior is not fitted to its generator
    (from before the prior was saved with the model, or marked stale by
    `mark_prior_stale`): True fits it now from the restored chains, as training does;
    False raises UserError.

    Raises UserError, in one line, if workdir holds no run or no checkpoint, or if the
    checkpoint does not match the architecture in config.json.
    """
    config, num_examples = read_saved(workdir)
    if config is None:
        raise UserError(f"no training run in {workdir} (no {CONFIG_FILE}); train first "
                        f"with python train.py --workdir={workdir}")
    config = dataclasses.replace(config, workdir=workdir)
    path = latest_checkpoint(workdir)
    if path is None:
        raise UserError(f"no checkpoint in {os.path.join(workdir, CHECKPOINT_DIR)}; train "
                        f"first with python train.py --workdir={workdir}")
    _read_checkpoint(path)
    in_checkpoint = chains_in_checkpoint(path)
    if num_examples is not None and num_examples != in_checkpoint:
        raise UserError(f"{CONFIG_FILE} in {workdir} says {num_examples} training images "
                        f"but its checkpoint holds {in_checkpoint} chains; the two come "
                        "from different runs")
    unfitted = not prior_fitted_in_checkpoint(path, config) and has_prior_to_fit(config)
    if unfitted and not fit_prior:
        why = ("it was written between two fits of the prior, every --figures_every "
               "epochs" if prior_is_stale(path) else
               "it was saved by an earlier version, whose prior stores less than this "
               "one's" if prior_in_checkpoint(path) else
               "it was trained before the prior was saved with the model")
        raise UserError(f"the checkpoint {path} holds no fitted prior ({why}); pass "
                        "--fit_prior to fit it now from the run's chains")
    if learner:  # resume fits the prior if the checkpoint's is not fitted
        model, _ = resume(config, in_checkpoint, path=path, strict=False)
        generator, prior, chains, encoder = (model.generator, model.prior, model.chains,
                                             model.encoder)
        step = int(model.optimizer.iterations.numpy())
    else:
        model = None
        generator, prior, chains, encoder, step = _restore_parts(config, path, in_checkpoint)
        _for_inference(generator, config)
    fitted = read_encoder(path)
    if fitted is not None:
        if (fitted.latent_dim, fitted.image_size) != (config.generator.latent_dim,
                                                      config.generator.image_size):
            raise UserError(f"{encoder_path(path)} was fitted to another architecture; "
                            "delete it and fit it again with python -m "
                            "sparse_gen_tf.commands.fit_encoder")
        encoder = fitted
        if model is not None:
            model.encoder = fitted
    if unfitted and not learner:
        # As the learner's fit_prior, from the restored chains (and the grammar prior,
        # from the training images too).
        prior.fit(generator, chains.numpy(), seed=config.seed,
                  images=_prior_images(config) if prior.uses_images else None)
    return TrainedModel(config, generator, prior, chains, encoder, path, step, model)


def resume(config, num_examples, *, strategy=None, path=None, strict=True):
    """(learner, checkpoint): the AlternatingBackprop (or CooperativeLearning) model of
    config, built for strategy (default: the one in scope; `build_model`), and the
    tf.train.Checkpoint of all its state (`checkpoint_for`; its epoch counter is
    `checkpoint.epoch`), restored from the checkpoint at path, or else from workdir's
    latest; with neither, fresh.

    Raises UserError, in one line, if that checkpoint holds chains for another number
    of images than num_examples (a folder that gained or lost files), or does not fit
    the architecture. strict: every piece of the learner must be in the checkpoint but
    the prior of a run from before the prior was saved with the model. That prior, and
    a stale one (`mark_prior_stale`), is then fitted once from the restored chains.
    """
    path = path or latest_checkpoint(config.workdir)
    if path is not None:
        _read_checkpoint(path)
        trained = chains_in_checkpoint(path)
        if trained != num_examples:
            raise UserError(f"--workdir={config.workdir} trained on {trained} images, but "
                            f"the data now gives {num_examples}; restore the data as it "
                            "was or use a new --workdir")
        # An old grammar run resumes with the prior its checkpoint holds.
        config = dataclasses.replace(config, prior=saved_prior(config, path))
    with (strategy or tf.distribute.get_strategy()).scope():
        model = build_model(config, num_examples)
    # Outside the scope: the epoch counter is host-side state, read as a Python int.
    checkpoint, _ = checkpoint_for(model)
    if path is None:
        return model, checkpoint
    has_prior = prior_in_checkpoint(path, model.prior)
    _restore(checkpoint, path, os.path.join(config.workdir, CONFIG_FILE),
             strict=strict and has_prior)
    # A prior missing from the checkpoint, or saved without a variable it has today
    # (restored in part above), or stale, is fitted again.
    if (not has_prior or prior_is_stale(path)) and has_prior_to_fit(config):
        model.fit_prior()
    return model, checkpoint


__all__ = ["TrainedModel", "build_model", "checkpoint_for", "chains_in_checkpoint",
           "encoder_path", "has_prior_to_fit", "latest_checkpoint", "mark_prior_stale",
           "open_run", "prior_fitted_in_checkpoint", "prior_in_checkpoint", "prior_is_stale",
           "read_config", "read_encoder", "read_saved", "remove_stale_marks", "resume",
           "saved_prior", "write_config", "write_encoder"]
