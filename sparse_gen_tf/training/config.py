"""One training run's settings: `TrainConfig`, nested as the system is, and its flat view.

    TrainConfig
      generator:  GeneratorConfig   g(z) of Eq. (7)               --image_size, --topk, ...
      langevin:   LangevinConfig    L, δ, σ of Eq. (10)-(11)      --langevin_steps, --sigma
      descriptor: DescriptorConfig  f(Y; φ) of §2.4, or None      --descriptor, --descriptor_*
      encoder:    EncoderConfig     q(z | Y), or None             --encoder, --encoder_*
      the data, the optimisation, checkpoints and where it runs   --dataset, --batch_size, ...

Every setting is written once, as a dataclass field: its default is the default, and its
metadata holds the help its flag shows, the flag's bounds, and whether it shapes the
checkpointed state. `settings()` flattens the tree into train.py's flags (their names
predate the nesting and stay, so that flag files and old runs keep working); `flags.py`
defines them from it, and `from_flat` / `flag_values` convert between the two views.
"""

import dataclasses
import typing

from sparse_gen_tf.data.parts import GEOMETRIES
from sparse_gen_tf.data.pipeline import DATASETS
from sparse_gen_tf.learning.langevin import LangevinConfig
from sparse_gen_tf.model.descriptor import DescriptorConfig
from sparse_gen_tf.model.encoder import EncoderConfig
from sparse_gen_tf.model.generator import GeneratorConfig
from sparse_gen_tf.model.prior import DEFAULT_PRIOR, PRIORS
from sparse_gen_tf.training.distribute import PRECISIONS, STRATEGIES


def _setting(default, help, **metadata):
    return dataclasses.field(default=default, metadata={"help": help, **metadata})


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything `trainer.train` needs. Defaults are the embedded `parts` setup.

    Field metadata: "help" (the flag's text), "lower_bound"/"upper_bound"/"choices" (the
    flag's checks), "state" (a resumed run must keep it: it shapes the checkpoint or
    fixes which image each persistent chain belongs to). A nested config's fields become
    flags named "flag_prefix" + field name, unless "flag_names" renames them.
    """
    workdir: str = _setting("runs/parts", "Checkpoints, TensorBoard events and flags go "
                            "here; rerunning resumes.")
    dataset: str = _setting(
        "parts", "parts: embedded And-Or grammar images (no download); celeb_a: TFDS "
        "celeb_a from --data_dir; folder: JPEG/PNG files under --data_dir.",
        choices=tuple(DATASETS), state=True)
    parts_geometry: str = _setting(
        "default", "parts only: the grammar's size (data/parts.py GEOMETRIES): default "
        "(any --image_size, 16 parts, 8 composites per quadrant), large (64x64, 12 parts, "
        "6 composites) or overlap (the default's images, for top kernels 6).",
        choices=tuple(GEOMETRIES), state=True)
    data_dir: str = _setting(None, "TFDS data_dir for celeb_a, or the image folder for "
                             "--dataset=folder.")
    num_images: int = _setting(
        2048, "Training images to use (the paper uses 5000 CelebA images).", lower_bound=1,
        state=True)
    heldout: int = _setting(
        0, "Image datasets: hold out this many images, the ones after the training images "
        "in file order (the last ones if the folder has fewer than --num_images + "
        "--heldout), for explain and evaluate. parts draws fresh held-out images and "
        "takes no --heldout.", lower_bound=0, state=True)
    # Faces are nearly symmetric: a mirrored face is another face of the same
    # distribution, and a second example for the generator to fit.
    flip: bool = _setting(
        False, "Image datasets: also train on every training image mirrored left to "
        "right, as an example with its own chain (twice the chains); the held-out images "
        "are not mirrored.", state=True)
    # The largest square of an aligned CelebA image keeps hair and background; the
    # literature's 64x64 faces are the centred 108-px box (0.607 of the width).
    crop: float = _setting(
        1.0, "Image datasets: crop each image's centred square, this fraction of its "
        "shorter side, before resizing (1: the largest square; 0.607: CelebA's 108-px "
        "face box).", lower_bound=0.05, upper_bound=1.0, state=True)
    generator: GeneratorConfig = dataclasses.field(
        default_factory=GeneratorConfig, metadata={"flag_prefix": ""})
    langevin: LangevinConfig = dataclasses.field(
        default_factory=LangevinConfig,
        metadata={"flag_prefix": "langevin_", "flag_names": {"sigma": "sigma"}})
    batch_size: int = _setting(64, "Examples per train step.", lower_bound=1)
    train_steps: int = _setting(3000, "Total train steps, rounded up to whole epochs.",
                                lower_bound=1)
    learning_rate: float = _setting(
        3e-3, "Initial Adam learning rate; cosine-decayed to a tenth by --train_steps.")
    # Not state: a schedule of the optimizer's step, as the learning rate's is, which a
    # resumed run continues. Why: with K units kept per map from the start, the kernels
    # that no example selects get no gradient, and the few that are selected must
    # explain everything at once; starting wider and narrowing K lets more kernels learn
    # a part first (k-sparse autoencoders, Makhzani & Frey 2014, anneal K the same way).
    # On parts, the reconstructions' legal quadrants at 1,504 steps 0.82 -> 0.95 (seed 1:
    # 0.81 -> 0.94), at 3,008 0.94 -> 0.97 (docs/training.md, "K warm-up").
    topk_warmup: float = _setting(
        0.33, "Fraction of --train_steps over which each layer's K goes down in a straight "
        "line from --topk_warmup_start times --topk to --topk, which it keeps "
        "from then on; 0: --topk from the first step. Below 1, so that the trained model "
        "is the --topk one.", lower_bound=0.0)
    # 4K rather than the whole map: as good at 500 warm-up steps and better at 1,000 (the
    # jump from a dense generator to K units undoes more of what it learned), and the
    # Langevin steps of the warm-up stay sparse, so cheap.
    topk_warmup_start: float = _setting(
        4.0, "With --topk_warmup: each layer's K at the first step, as a multiple of its "
        "--topk (at most its whole feature map; a large value starts from the dense "
        "generator).", lower_bound=1.0)
    jit_compile: bool = _setting(True, "Compile the train step, Langevin included, with XLA.")
    # Not state: how ∂/∂z is computed, not what; a run may resume with either.
    sparse_kernels: str = _setting(
        "auto", "Langevin gradient through the compiled sparse kernels (only the K kept "
        "units paint and read back; built with the C++ compiler at first use; CPU, plain "
        "ABP, float32): auto, where they pay (every layer's K / h*w*c <= 10%, XLA on); "
        "on, wherever supported; off, never. Elsewhere the dense XLA step runs.",
        choices=("auto", "on", "off"))
    seed: int = _setting(0, "Seeds data generation, the initial weights, chains and Langevin "
                    "noise.", state=True)
    checkpoint_every: int = _setting(
        5, "Epochs between checkpoints (and at the last): the generator, chains, "
        "optimizer and RNG state, what a resumed run needs; a kill loses the work since "
        "the last one. The prior in them is the last one fitted (--figures_every); one "
        "fitted to an earlier generator is refitted when the run is opened.",
        lower_bound=1)
    keep_checkpoints: int = _setting(3, "How many of the latest checkpoints to keep.",
                                     lower_bound=1)
    log_every: int = _setting(10, "Train steps between TensorBoard scalar summaries.",
                              lower_bound=1)
    figures_every: int = _setting(
        25, "Epochs between fits of the prior to the chains, each followed by "
        "TensorBoard's image grids, kernel and parse figures and grammar scores (and "
        "at the last epoch): a few seconds each, so the first grids appear after this "
        "many epochs.", lower_bound=1)
    num_summary_images: int = _setting(16, "Images in each TensorBoard image grid.",
                                       lower_bound=1)
    # Not state: each prior's variables are fitted from the chains during training,
    # so a run resumed with another --prior fits the new one (model/prior.py).
    prior: str = _setting(
        DEFAULT_PRIOR, "Where samples come from (sample signature, TensorBoard, explain, "
        "evaluate): grammar, the induced And-Or grammar's OR configurations per block of "
        "top OR nodes (top AND nodes, merged where a swap test finds them dependent), or "
        "per quadrant of the layer below lifted to a top layer where that samples legal "
        "quadrants more often, fitted from the training parses every --figures_every "
        "epochs; nodes, OR configurations per top AND node, each node alone (the grammar "
        "prior of older runs, which open with it); joint, whole top-layer configurations "
        "of the training parses; normal, z ~ N(0, I).",
        choices=PRIORS)
    # None trains by plain ABP; a config adds cooperative learning (cooperative.py).
    descriptor: typing.Optional[DescriptorConfig] = dataclasses.field(default=None, metadata={
        "help": "Cooperative learning (§2.4): an energy-based descriptor revises g(z) and "
                "the generator learns from the revision.",
        "flag_prefix": "descriptor_", "state": True})
    # None trains no inference network; fit_encoder can fit one after training.
    encoder: typing.Optional[EncoderConfig] = dataclasses.field(default=None, metadata={
        "help": "Train an inference network q(z | Y) beside the generator, on the "
                "persistent chains (one regression step per train step), for the fast "
                "reconstruct (export --reconstruct=amortized); python -m "
                "sparse_gen_tf.commands.fit_encoder fits one after training instead.",
        "flag_prefix": "encoder_", "state": True})
    # Where the run executes (distribute.py). A run may resume under another strategy or
    # number of devices: the checkpoint holds one copy of every variable.
    strategy: str = _setting(
        "default", "default: one device; mirrored: all local GPUs, or --cpu_devices logical "
        "CPUs; multi_worker: the hosts in TF_CONFIG. --batch_size is global.",
        choices=tuple(STRATEGIES))
    cpu_devices: int = _setting(
        0, "Split the CPU into this many logical devices, the replicas of "
        "--strategy=mirrored on a machine without GPUs (0: leave it whole).", lower_bound=0)
    # mixed_float16 wraps the optimizer (loss scaling), so its slots move: state.
    mixed_precision: str = _setting(
        "float32", "Keras dtype policy of the networks; z, Langevin and the losses stay "
        "float32. mixed_float16 and mixed_bfloat16 are for GPUs.",
        choices=tuple(PRECISIONS), state=True)


def topk_warmup_steps(config):
    """The optimizer steps of config's K warm-up (--topk_warmup of --train_steps)."""
    return int(config.topk_warmup * config.train_steps)


def topk_warmup_start(config):
    """Each layer's K at the warm-up's first step (--topk_warmup_start times --topk, at
    most the layer's map), top first; a tuple of ints."""
    return tuple(min(h * w * c, int(round(k * config.topk_warmup_start)))
                 for k, (h, w, c) in zip(config.generator.topk,
                                         config.generator.feature_map_shapes()))


def topk_warmup_problem(fraction):
    """None when --topk_warmup is a fraction in [0, 1), else why not (one line)."""
    if not 0.0 <= fraction < 1.0:
        return (f"--topk_warmup={fraction} must be in [0, 1), a fraction of --train_steps "
                "(0: no warm-up), so that the model ends at --topk")
    return None


@dataclasses.dataclass(frozen=True)
class Setting:
    """One flag of train.py and the TrainConfig field behind it.

    flag: the flag's name, e.g. "langevin_step_size".
    path: the field's attribute path in TrainConfig, e.g. ("langevin", "step_size").
    field: the dataclasses.Field (its metadata: help, bounds, state).
    default: the flag's default. The switch of an optional config (--descriptor) is a
      bool, False by default; its fields' flags default to that config's defaults.
    """
    flag: str
    path: tuple
    field: dataclasses.Field
    default: object

    @property
    def switch(self):
        """True for the flag that turns an optional config (the descriptor) on."""
        return _nested_class(self.field) is not None

    @property
    def kind(self):
        """The flag's Python type: bool, int, float, str or tuple (a comma list)."""
        return bool if self.switch else self.field.type

    @property
    def help(self):
        return self.field.metadata["help"]

    @property
    def state(self):
        return bool(self.field.metadata.get("state"))


def _nested_class(field):
    """The config class of a nested field (`Optional[X]` gives X), or None for a leaf."""
    for candidate in (field.type, *typing.get_args(field.type)):
        if dataclasses.is_dataclass(candidate):
            return candidate
    return None


def _settings(cls, path, prefix, names):
    defaults = cls()
    for field in dataclasses.fields(cls):
        nested = _nested_class(field)
        if nested is None:
            if "help" in field.metadata:  # a field without help has no flag
                yield Setting(names.get(field.name, prefix + field.name),
                              path + (field.name,), field, getattr(defaults, field.name))
            continue
        if getattr(defaults, field.name) is None:  # optional: a switch, then its fields
            yield Setting(field.name, path + (field.name,), field, False)
        yield from _settings(nested, path + (field.name,),
                             field.metadata.get("flag_prefix", ""),
                             field.metadata.get("flag_names", {}))


def settings():
    """Every flag of train.py as a `Setting`, in TrainConfig's order."""
    return list(_settings(TrainConfig, (), "", {}))


def flag_values(config):
    """{flag name: value} of config, as train.py's flags would give it. The fields of an
    absent optional config (no descriptor) are left out; its switch is False."""
    values = {}
    for setting in settings():
        value = config
        for name in setting.path:
            if value is None:
                break
            value = getattr(value, name)
        else:
            values[setting.flag] = (value is not None) if setting.switch else value
    return values


def from_flat(values):
    """The TrainConfig of {flag name: value}: absl's parsed flags, or the flat config.json
    of a run trained before the config was nested. Lists become tuples; missing names
    take their defaults and unknown ones are ignored."""
    tree = {field.name: {} for field in dataclasses.fields(TrainConfig)
            if _nested_class(field) is not None and field.default is not None}
    for setting in settings():  # a switch comes before the fields it turns on
        if setting.flag not in values:
            continue
        value = values[setting.flag]
        if setting.switch:
            value = {} if value else None
        node = tree
        for name in setting.path[:-1]:
            node = node.get(name)
            if node is None:  # a field of an optional config that is off, or unnamed
                break
        else:
            node[setting.path[-1]] = value
    return from_dict(tree)


def from_dict(values, cls=TrainConfig):
    """The config of `dataclasses.asdict(config)` read back from JSON (lists become
    tuples, nested dicts configs). Missing fields take their defaults, unknown ones are
    ignored, so the config.json of another version reads. Raises TypeError or ValueError
    for values that are not a config."""
    if not isinstance(values, dict):
        raise TypeError(f"expected a JSON object for {cls.__name__}, got {values!r:.40}")
    kwargs = {}
    for field in dataclasses.fields(cls):
        if field.name not in values:
            continue
        value = values[field.name]
        nested = _nested_class(field)
        if nested is not None and value is not None:
            value = from_dict(value, nested)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[field.name] = value
    return cls(**kwargs)


def state_settings():
    """The settings that a resumed run must agree on (field metadata "state"): what
    shapes the weights, chains and optimizer slots, or ties chains to images."""
    return [setting for setting in settings() if setting.state]


__all__ = ["Setting", "TrainConfig", "flag_values", "from_dict", "from_flat", "settings",
           "state_settings", "topk_warmup_problem", "topk_warmup_start", "topk_warmup_steps"]
