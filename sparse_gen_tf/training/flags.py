"""Command-line flags of train.py, their validators, and their conversion to TrainConfig.

The flags are defined from `config.settings()`: each TrainConfig field gives its flag's
name, type, default, help and bounds. Validators run while absl parses the command line,
so a bad value stops the program with one line ("train.py: error: ...", commands/cli.py)
before anything is written.
"""

from absl import flags

from sparse_gen_tf.model.descriptor import DescriptorConfig
from sparse_gen_tf.model.encoder import EncoderConfig
from sparse_gen_tf.model.generator import GeneratorConfig
from sparse_gen_tf.training import config
from sparse_gen_tf.training.config import topk_warmup_problem

FLAGS = flags.FLAGS

_SETTINGS = config.settings()
_DEFINE = {bool: flags.DEFINE_boolean, int: flags.DEFINE_integer,
           float: flags.DEFINE_float, str: flags.DEFINE_string}


def _positive_ints(name):
    def check(values):
        try:
            return all(int(v) > 0 for v in values) and len(values) > 0
        except ValueError:
            return False
    flags.register_validator(name, check,
                             message=f"--{name} must be a comma list of positive integers")


for _setting in _SETTINGS:
    _metadata = _setting.field.metadata
    if "choices" in _metadata:
        flags.DEFINE_enum(_setting.flag, _setting.default, list(_metadata["choices"]),
                          _setting.help)
    elif _setting.kind is tuple:
        flags.DEFINE_list(_setting.flag, ",".join(map(str, _setting.default)), _setting.help)
        _positive_ints(_setting.flag)
    else:
        _DEFINE[_setting.kind](_setting.flag, _setting.default, _setting.help, **{
            k: _metadata[k] for k in ("lower_bound", "upper_bound") if k in _metadata})

flags.register_validator("sigma", lambda v: v > 0, message="--sigma must be > 0")
flags.register_validator("learning_rate", lambda v: v > 0,
                         message="--learning_rate must be > 0")
flags.register_validator("langevin_step_size", lambda v: v > 0,
                         message="--langevin_step_size must be > 0 (try 0.1)")


def _under(name):
    """The settings of one nested config of TrainConfig (its switch left out)."""
    return [s for s in _SETTINGS if len(s.path) == 2 and s.path[0] == name]


def _value(v):
    """A flag's value as in the config: comma lists as int tuples (ValueError if not)."""
    return tuple(int(x) for x in v) if isinstance(v, list) else v


def _config_of(cls, settings, values):
    """cls built from the flag values of its settings."""
    return cls(**{s.path[-1]: _value(values[s.flag]) for s in settings})


_GENERATOR = _under("generator")
_DESCRIPTOR = _under("descriptor")
_ENCODER = _under("encoder")


@flags.multi_flags_validator([s.flag for s in _GENERATOR],
                             message="inconsistent generator architecture")
def _check_architecture(values):
    try:
        _config_of(GeneratorConfig, _GENERATOR, values)
    except ValueError as e:
        raise flags.ValidationError(str(e)) from None
    return True


@flags.multi_flags_validator(["dataset", "data_dir"])
def _check_data_dir(values):
    if values["dataset"] == "folder" and not values["data_dir"]:
        raise flags.ValidationError(
            "--dataset=folder needs --data_dir=PATH, a folder of JPEG or PNG images")
    return True


# Flags that only mean something for datasets of images, their neutral values, and why
# each is refused on the parts grammar, whose images are drawn fresh from their derivations.
_IMAGE_DATASET_ONLY = {
    "heldout": (0, "--dataset=parts draws fresh held-out images of its grammar"),
    "flip": (False, "a mirrored parts image is not a derivation of its grammar"),
    "crop": (1.0, "parts images are drawn at --image_size"),
}


@flags.multi_flags_validator(["dataset", *_IMAGE_DATASET_ONLY])
def _check_image_dataset_only(values):
    for name, (neutral, why) in _IMAGE_DATASET_ONLY.items():
        if values["dataset"] == "parts" and values[name] != neutral:
            raise flags.ValidationError(
                f"--{name} is for image datasets; {why}, so drop --{name}")
    return True


@flags.multi_flags_validator(["strategy", "cpu_devices"])
def _check_cpu_devices(values):
    if values["cpu_devices"] > 1 and values["strategy"] != "mirrored":
        raise flags.ValidationError(
            f"--cpu_devices={values['cpu_devices']} only makes replicas for "
            "--strategy=mirrored; add it or drop --cpu_devices")
    return True


flags.register_validator("topk_warmup", lambda v: topk_warmup_problem(v) is None,
                         message="--topk_warmup must be in [0, 1), a fraction of "
                         "--train_steps (0: no warm-up), so that the model ends at --topk")


@flags.multi_flags_validator(["batch_size", "num_images"])
def _check_batch(values):
    if values["batch_size"] > values["num_images"]:
        raise flags.ValidationError(
            f"--batch_size={values['batch_size']} exceeds --num_images="
            f"{values['num_images']}; lower the batch size or use more images")
    return True


for _name in ("descriptor_step_size", "descriptor_reference", "descriptor_learning_rate"):
    flags.register_validator(_name, lambda v: v > 0,
                             message=f"--{_name} must be > 0 (try {FLAGS[_name].default})")


@flags.multi_flags_validator(["descriptor", *(s.flag for s in _DESCRIPTOR)])
def _check_descriptor(values):
    try:
        if values["descriptor"]:
            _config_of(DescriptorConfig, _DESCRIPTOR, values)
            return True
        # Compared with the defaults, not "given", so that the flags.txt of a run trained
        # before config.json was nested (it spelled out every flag) still parses.
        unused = [s.flag for s in _DESCRIPTOR if _value(values[s.flag]) != s.default]
    except ValueError as e:  # non-integers: the list validators say so
        raise flags.ValidationError(str(e)) from None
    if unused:
        raise flags.ValidationError(
            f"--{unused[0]} configures the descriptor, which only --descriptor trains; add "
            "--descriptor (cooperative learning, §2.4) or drop the descriptor flags")
    return True


flags.register_validator("encoder_learning_rate", lambda v: v > 0,
                         message="--encoder_learning_rate must be > 0 (try 0.001)")


@flags.multi_flags_validator(["encoder", *(s.flag for s in _ENCODER)])
def _check_encoder(values):
    try:
        if values["encoder"]:
            _config_of(EncoderConfig, _ENCODER, values)
            return True
        unused = [s.flag for s in _ENCODER if _value(values[s.flag]) != s.default]
    except ValueError as e:  # non-integers: the list validators say so
        raise flags.ValidationError(str(e)) from None
    if unused:
        raise flags.ValidationError(
            f"--{unused[0]} configures the inference network, which only --encoder trains; "
            "add --encoder or drop the encoder flags")
    return True


def train_config():
    """The parsed flags as a TrainConfig."""
    return config.from_flat({s.flag: FLAGS[s.flag].value for s in _SETTINGS})
