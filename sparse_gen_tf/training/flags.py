"""Command-line flags of train.py, their validators, and their conversion to TrainConfig.

Validators run while absl parses the command line, so a bad value stops the program with
one line (absl's "Flags parsing error: ...") before anything is written.
"""

import dataclasses

from absl import flags

from sparse_gen_tf.training.config import TrainConfig
from sparse_gen_tf.data.pipeline import DATASETS
from sparse_gen_tf.model.descriptor import DescriptorConfig
from sparse_gen_tf.training.distribute import PRECISIONS, STRATEGIES
from sparse_gen_tf.model.generator import GeneratorConfig

_D = TrainConfig()


def _ints(values):
    return ",".join(str(v) for v in values)


flags.DEFINE_string("workdir", _D.workdir,
                    "Checkpoints, TensorBoard events and flags go here; rerunning resumes.")
flags.DEFINE_enum("dataset", _D.dataset, list(DATASETS),
                  "parts: embedded And-Or grammar images (no download); celeb_a: TFDS "
                  "celeb_a from --data_dir; folder: JPEG/PNG files under --data_dir.")
flags.DEFINE_string("data_dir", _D.data_dir,
                    "TFDS data_dir for celeb_a, or the image folder for --dataset=folder.")
flags.DEFINE_integer("image_size", _D.image_size, "Side of the square images, pixels.",
                     lower_bound=4)
flags.DEFINE_integer("num_images", _D.num_images,
                     "Training images to use (the paper uses 5000 CelebA images).",
                     lower_bound=1)
flags.DEFINE_integer("heldout", _D.heldout,
                     "Image datasets: hold out this many images, the ones after the "
                     "training images in file order (the last ones if the folder has "
                     "fewer than --num_images + --heldout), for explain and evaluate. "
                     "parts draws fresh held-out images and takes no --heldout.",
                     lower_bound=0)
flags.DEFINE_integer("batch_size", _D.batch_size, "Examples per train step.", lower_bound=1)
flags.DEFINE_integer("train_steps", _D.train_steps,
                     "Total train steps, rounded up to whole epochs.", lower_bound=1)
flags.DEFINE_integer("latent_dim", _D.latent_dim, "Dimension d of z.", lower_bound=1)
flags.DEFINE_list("channels", _ints(_D.channels),
                  "Channels of each sparse feature map, top (FC) first.")
flags.DEFINE_list("topk", _ints(_D.topk), "K of each sparse feature map, top first.")
flags.DEFINE_list("kernel_sizes", _ints(_D.kernel_sizes),
                  "Kernel size of each transposed conv (the conv leaving feature map i).")
flags.DEFINE_list("strides", _ints(_D.strides),
                  "Stride of each transposed conv; their product divides image_size.")
flags.DEFINE_integer("langevin_steps", _D.langevin_steps,
                     "Langevin steps L per train step (Eq. 10).", lower_bound=0)
flags.DEFINE_float("langevin_step_size", _D.langevin_step_size,
                   "Langevin step size δ (Eq. 10).", lower_bound=0.0)
flags.DEFINE_float("sigma", _D.sigma, "Observation noise σ (Eq. 7, 11).")
flags.DEFINE_float("learning_rate", _D.learning_rate,
                   "Initial Adam learning rate; cosine-decayed to a tenth by --train_steps.")
flags.DEFINE_boolean("jit_compile", _D.jit_compile,
                     "Compile the train step, Langevin included, with XLA.")
flags.DEFINE_integer("seed", _D.seed, "Seeds data generation, chains and Langevin noise.")
flags.DEFINE_integer("checkpoint_every", _D.checkpoint_every,
                     "Epochs between checkpoints (and TensorBoard image grids).",
                     lower_bound=1)
flags.DEFINE_integer("keep_checkpoints", _D.keep_checkpoints,
                     "How many of the latest checkpoints to keep.", lower_bound=1)
flags.DEFINE_integer("log_every", _D.log_every,
                     "Train steps between TensorBoard scalar summaries.", lower_bound=1)
flags.DEFINE_integer("num_summary_images", _D.num_summary_images,
                     "Images in each TensorBoard image grid.", lower_bound=1)
flags.DEFINE_boolean("descriptor", _D.descriptor,
                     "Cooperative learning (§2.4): an energy-based descriptor revises g(z) "
                     "and the generator learns from the revision.")
flags.DEFINE_list("descriptor_channels", _ints(_D.descriptor_channels),
                  "Channels of each descriptor conv, image side first (CoopNets: "
                  "64,128,256).")
flags.DEFINE_list("descriptor_kernel_sizes", _ints(_D.descriptor_kernel_sizes),
                  "Kernel size of each descriptor conv.")
flags.DEFINE_list("descriptor_strides", _ints(_D.descriptor_strides),
                  "Stride of each descriptor conv.")
flags.DEFINE_integer("descriptor_steps", _D.descriptor_steps,
                     "Descriptor Langevin steps per train step (revision of g(z)).",
                     lower_bound=1)
flags.DEFINE_float("descriptor_step_size", _D.descriptor_step_size,
                   "Descriptor Langevin step size δ.")
flags.DEFINE_float("descriptor_reference", _D.descriptor_reference,
                   "Standard deviation s of the descriptor's Gaussian reference q (Eq. 13).")
flags.DEFINE_float("descriptor_learning_rate", _D.descriptor_learning_rate,
                   "The descriptor's Adam learning rate (constant, β1 = 0.5).")
flags.DEFINE_boolean("descriptor_fresh_samples", _D.descriptor_fresh_samples,
                     "Also revise g(z) for fresh z ~ N(0, I) (CoopNets); they join the "
                     "descriptor's negative phase and the generator's regression.")
flags.DEFINE_float("descriptor_data_weight", _D.descriptor_data_weight,
                   "w in [0, 1]: the generator regresses on (1 - w) * revision + w * data "
                   "(0: the paper's pure replacement of Y_i by the revision).",
                   lower_bound=0.0, upper_bound=1.0)

flags.DEFINE_enum("strategy", _D.strategy, list(STRATEGIES),
                  "default: one device; mirrored: all local GPUs, or --cpu_devices logical "
                  "CPUs; multi_worker: the hosts in TF_CONFIG. --batch_size is global.")
flags.DEFINE_integer("cpu_devices", _D.cpu_devices,
                     "Split the CPU into this many logical devices, the replicas of "
                     "--strategy=mirrored on a machine without GPUs (0: leave it whole).",
                     lower_bound=0)
flags.DEFINE_enum("mixed_precision", _D.mixed_precision, list(PRECISIONS),
                  "Keras dtype policy of the networks; z, Langevin and the losses stay "
                  "float32. mixed_float16 and mixed_bfloat16 are for GPUs.")

FLAGS = flags.FLAGS


def _positive_ints(name):
    def check(values):
        try:
            return all(int(v) > 0 for v in values) and len(values) > 0
        except ValueError:
            return False
    flags.register_validator(name, check,
                             message=f"--{name} must be a comma list of positive integers")


for _name in ("channels", "topk", "kernel_sizes", "strides"):
    _positive_ints(_name)

flags.register_validator("sigma", lambda v: v > 0, message="--sigma must be > 0")
flags.register_validator("learning_rate", lambda v: v > 0,
                         message="--learning_rate must be > 0")
flags.register_validator("langevin_step_size", lambda v: v > 0,
                         message="--langevin_step_size must be > 0 (try 0.1)")


@flags.multi_flags_validator(
    ["image_size", "latent_dim", "channels", "topk", "kernel_sizes", "strides"],
    message="inconsistent generator architecture")
def _check_architecture(values):
    try:
        GeneratorConfig(**{k: (tuple(int(v) for v in x) if isinstance(x, list) else x)
                           for k, x in values.items()})
    except ValueError as e:
        raise flags.ValidationError(str(e)) from None
    return True


@flags.multi_flags_validator(["dataset", "data_dir"])
def _check_data_dir(values):
    if values["dataset"] == "folder" and not values["data_dir"]:
        raise flags.ValidationError(
            "--dataset=folder needs --data_dir=PATH, a folder of JPEG or PNG images")
    return True


@flags.multi_flags_validator(["dataset", "heldout"])
def _check_heldout(values):
    if values["dataset"] == "parts" and values["heldout"]:
        raise flags.ValidationError(
            "--heldout is for image datasets; --dataset=parts draws fresh held-out images "
            "of its grammar, so drop --heldout")
    return True


@flags.multi_flags_validator(["strategy", "cpu_devices"])
def _check_cpu_devices(values):
    if values["cpu_devices"] > 1 and values["strategy"] != "mirrored":
        raise flags.ValidationError(
            f"--cpu_devices={values['cpu_devices']} only makes replicas for "
            "--strategy=mirrored; add it or drop --cpu_devices")
    return True


@flags.multi_flags_validator(["batch_size", "num_images"])
def _check_batch(values):
    if values["batch_size"] > values["num_images"]:
        raise flags.ValidationError(
            f"--batch_size={values['batch_size']} exceeds --num_images="
            f"{values['num_images']}; lower the batch size or use more images")
    return True


for _name in ("descriptor_channels", "descriptor_kernel_sizes", "descriptor_strides"):
    _positive_ints(_name)
for _name, _hint in (("descriptor_step_size", "0.002"), ("descriptor_reference", "1.0"),
                     ("descriptor_learning_rate", "0.001")):
    flags.register_validator(_name, lambda v: v > 0,
                             message=f"--{_name} must be > 0 (try {_hint})")

_DESCRIPTOR_ONLY = ("descriptor_channels", "descriptor_kernel_sizes", "descriptor_strides",
                    "descriptor_steps", "descriptor_step_size", "descriptor_reference",
                    "descriptor_learning_rate", "descriptor_fresh_samples",
                    "descriptor_data_weight")


@flags.multi_flags_validator(["descriptor", *_DESCRIPTOR_ONLY])
def _check_descriptor(values):
    def value(name):
        v = values[name]
        return tuple(int(x) for x in v) if isinstance(v, list) else v

    try:
        if values["descriptor"]:
            DescriptorConfig(channels=value("descriptor_channels"),
                             kernel_sizes=value("descriptor_kernel_sizes"),
                             strides=value("descriptor_strides"))
            return True
        # Compared with the defaults, not "given", so that a run's own flags.txt (which
        # spells out every setting) still parses.
        unused = [name for name in _DESCRIPTOR_ONLY if value(name) != getattr(_D, name)]
    except ValueError as e:  # non-integers: the list validators say so
        raise flags.ValidationError(str(e)) from None
    if unused:
        raise flags.ValidationError(
            f"--{unused[0]} configures the descriptor, which only --descriptor trains; add "
            "--descriptor (cooperative learning, §2.4) or drop the descriptor flags")
    return True


def train_config():
    """The parsed flags as a TrainConfig."""
    values = {}
    for field in dataclasses.fields(TrainConfig):
        if field.name not in FLAGS:  # settings without a flag keep their defaults
            continue
        value = FLAGS[field.name].value
        if isinstance(value, list):
            value = tuple(int(v) for v in value)
        values[field.name] = value
    return TrainConfig(**values)
