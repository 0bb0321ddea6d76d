"""What the commands (train.py, explain, evaluate, the export scripts) share: their start,
and the inference flags of explain and evaluate."""

import sys

from absl import flags, logging

from sparse_gen_tf.learning import inference


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
        steps=values.inference_steps, restarts=values.restarts,
        anneal_sigma=values.anneal_sigma, anneal_stages=values.anneal_stages,
        refine_steps=values.refine_steps, use_bank=values.use_bank,
        refine_step_size=values.refine_step_size)
