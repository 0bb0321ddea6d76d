"""What the commands (train.py, explain, evaluate, the export scripts) share: their start
and end, and the inference flags of explain and evaluate."""

import sys

from absl import app, flags, logging

from sparse_gen_tf import console
from sparse_gen_tf.learning import inference

# The console scripts of setup.cfg, named where a command says what to run next.
SCRIPTS = {"train": "sparse-gen-train", "explain": "sparse-gen-explain",
           "evaluate": "sparse-gen-evaluate", "export": "sparse-gen-export",
           "fit_encoder": "sparse-gen-fit-encoder"}


def run(program, main):
    """app.run(main), with a bad flag refused in one line: "PROGRAM: error: MESSAGE"."""
    app.run(main, flags_parser=lambda argv: parse_flags(program, argv))


def parse_flags(program, argv):
    """flags.FLAGS(argv); a bad flag exits with one line naming it, without absl's dump of
    every flag a validator looked at ("flags image_size=32, latent_dim=32, ...: ...") or
    its "Pass --helpshort" line."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        sys.exit(f"{program}: error: {flag_error(e)}")


def flag_error(error):
    """The first message of an absl flag error, without the flag values its validator
    prefixes ("flag --sigma=-1.0: " or "flags a=1, b=2: ") when the message names a flag
    itself."""
    message = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
    for name in flags.FLAGS:
        for validator in flags.FLAGS[name].validators:
            try:
                prefix = validator.print_flags_with_values(flags.FLAGS) + ": "
            except Exception:  # a validator of a flag that did not parse
                continue
            if message.startswith(prefix):
                rest = message[len(prefix):]
                return rest if "--" in rest or prefix.startswith("flags ") else message
    return message


def start(program, argv, quiet=True):
    """Refuses stray positional arguments in one line; sets the log lines shown.

    The package's own log lines are shown (from WARNING if quiet, from INFO if not), and
    other libraries' only from ERROR (`console.quiet_logging`), unless --verbose or
    --verbosity was given: TensorFlow's INFO and retracing WARNING lines are noise in a
    command whose output is its result.
    """
    if len(argv) > 1:
        sys.exit(f"{program}: unexpected arguments {' '.join(argv[1:])}; flags look like "
                 "--name=value")
    console.quiet_logging(logging.WARNING if quiet else logging.INFO)


def progress(program, message):
    """A line of progress on stderr, where it does not mix with a result on stdout."""
    print(f"{program}: {message}", file=sys.stderr, flush=True)


def define_inference_flags():
    """absl flags for `inference.InferenceSettings` (explain and evaluate)."""
    d = inference.DEFAULT_SETTINGS
    flags.DEFINE_enum("inference", d.method, list(inference.METHODS),
                      "search: Langevin chains from several starts (the flags below); "
                      "amortized: the run's inference network (train.py --encoder or "
                      "python -m sparse_gen_tf.commands.fit_encoder), then --amortized_steps "
                      "refinement steps.")
    flags.DEFINE_integer("amortized_steps", d.amortized_steps,
                         "Amortized: noise-free steps (gradient ascent on Eq. 11) after "
                         "the network's guess.", lower_bound=0)
    flags.DEFINE_float("amortized_step_size", d.amortized_step_size,
                       "Amortized: δ of those steps.", lower_bound=0.0)
    flags.DEFINE_float("amortized_momentum", d.amortized_momentum,
                       "Amortized: heavy-ball momentum β of those steps (0: plain "
                       "gradient ascent).", lower_bound=0.0, upper_bound=0.99)
    flags.DEFINE_integer("inference_steps", d.steps, "Langevin steps per chain.",
                         lower_bound=0)
    flags.DEFINE_integer("restarts", d.restarts, "Chains per image; the best one is kept.",
                         lower_bound=1)
    flags.DEFINE_float("anneal_sigma", d.anneal_sigma,
                       "First-stage σ as a multiple of the model's σ (1 = no annealing).",
                       lower_bound=1.0)
    flags.DEFINE_integer("anneal_stages", d.anneal_stages, "Stages of σ annealing.",
                         lower_bound=1)
    flags.DEFINE_integer("refine_steps", d.refine_steps,
                         "Noise-free steps (gradient ascent on Eq. 11) on the selected "
                         "chain.", lower_bound=0)
    flags.DEFINE_float("refine_step_size", d.refine_step_size,
                       "δ of the refinement steps (default: the model's Langevin δ, at "
                       "which gradient ascent can overshoot; faces use 0.1).",
                       lower_bound=0.0)
    flags.DEFINE_boolean("use_bank", d.use_bank,
                         "Start chains from the training images' persistent chains too.")


def inference_settings(values):
    """The `inference.InferenceSettings` of parsed flags `values`."""
    return inference.InferenceSettings(
        method=values.inference, amortized_steps=values.amortized_steps,
        amortized_step_size=values.amortized_step_size,
        amortized_momentum=values.amortized_momentum, steps=values.inference_steps,
        restarts=values.restarts,
        anneal_sigma=values.anneal_sigma, anneal_stages=values.anneal_stages,
        refine_steps=values.refine_steps, use_bank=values.use_bank,
        refine_step_size=values.refine_step_size)
