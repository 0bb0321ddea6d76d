"""Scores a trained generator on the embedded parts dataset against its ground truth.

    python -m sparse_gen_tf.evaluate --workdir=runs/parts[,runs/parts_dense]

For each workdir it writes WORKDIR/evaluation.json, and it prints one markdown table with
a column per run (see parts_metrics for the definitions):

  dictionary_recovery   mean over true parts of the best r with a bottom basis function
  kernel_purity         fraction of bottom kernels in use with |r| > 0.9 to one part
  parse_accuracy        held-out cells whose dominant OR node maps to the true part
  psnr_heldout          held-out images, z from `inference.infer` (the --restarts etc.)
  psnr_train            training images, z = their persistent chains
  *_train_infer         training images, z from `inference.infer` like the held-out ones
  *_occluded            held-out with the central half hidden from the likelihood,
                        scored on the hidden cells / pixels only
  *_plain               held-out, plain Langevin from N(0, I), 200 steps: the calibration
                        baseline, `inference.PLAIN_SETTINGS`

Channels are mapped to parts on the first --num_fit training images (persistent chains);
"in use" means surviving in at least one of their parses.
"""

import json
import os
import sys

from sparse_gen_tf import inference, parts_metrics
from sparse_gen_tf.data import parts
from sparse_gen_tf.data.pipeline import to_model_range
from sparse_gen_tf.errors import UserError
from sparse_gen_tf.explain import central_occluder, heldout_images, load_run

ROWS = (("dictionary_recovery", "Dictionary recovery (mean best r)", "{:.3f}"),
        ("kernel_purity", "Kernel purity (clean / in use)", None),
        ("parse_accuracy", "Parse accuracy, held-out", "{:.3f}"),
        ("parse_accuracy_train", "Parse accuracy, training (persistent chains)", "{:.3f}"),
        ("parse_accuracy_train_infer", "Parse accuracy, training, same inference as "
         "held-out", "{:.3f}"),
        ("psnr_heldout", "PSNR held-out (dB)", "{:.2f}"),
        ("psnr_train", "PSNR training, persistent chains (dB)", "{:.2f}"),
        ("psnr_train_infer", "PSNR training, same inference as held-out (dB)", "{:.2f}"),
        ("parse_accuracy_occluded", "Parse accuracy, held-out, hidden cells only",
         "{:.3f}"),
        ("psnr_occluded", "PSNR held-out, hidden pixels only (dB)", "{:.2f}"),
        ("parse_accuracy_plain", "Parse accuracy, held-out, plain Langevin", "{:.3f}"),
        ("psnr_heldout_plain", "PSNR held-out, plain Langevin (dB)", "{:.2f}"))


def score_latents(generator, z, images, part_labels, channel_parts):
    """(PSNR, parse accuracy) of latents z for images with true labels."""
    dominant = parts_metrics.dominant_channels(
        parts_metrics.bottom_contributions(generator, z))
    return (parts_metrics.psnr(images, generator(z).numpy()),
            parts_metrics.parse_accuracy(dominant, channel_parts, part_labels))


def occlusion_scores(model, images, part_labels, channel_parts, settings, seed):
    """(PSNR of the hidden pixels, parse accuracy of the hidden cells) when the central
    half of each image is hidden from the likelihood (`central_occluder`)."""
    generator = model.generator
    observed = central_occluder(images)
    z = inference.reconstruct(model, images, settings=settings, seed=seed,
                              observed=observed).numpy()
    hidden = observed[..., 0] == 0
    grid = part_labels.shape[1]
    cell = images.shape[1] // grid
    hidden_cells = hidden.reshape(len(hidden), grid, cell, grid, cell)[:, :, 0, :, 0]
    dominant = parts_metrics.dominant_channels(
        parts_metrics.bottom_contributions(generator, z))
    return (parts_metrics.psnr(images[hidden], generator(z).numpy()[hidden]),
            parts_metrics.parse_accuracy(dominant[hidden_cells], channel_parts,
                                         part_labels[hidden_cells]))


def evaluate(workdir, *, num_heldout=256, num_fit=512, settings=inference.DEFAULT_SETTINGS,
             baseline=True, seed=0):
    """Computes the scores of workdir's latest checkpoint; writes evaluation.json."""
    config, model = load_run(workdir)
    generator = model.generator
    if config.dataset != "parts":
        raise UserError(f"evaluate needs a run on --dataset=parts (its ground truth), "
                        f"but {workdir} was trained on {config.dataset}")
    train_images, truth = parts.generate(config.num_images, image_size=config.image_size,
                                         seed=config.seed)
    problem = parts_metrics.check_geometry(generator.config, truth.parts.shape[1])
    if problem:
        raise UserError(f"cannot score {workdir}: {problem}")
    results = {"workdir": workdir, "topk": list(config.topk),
               "train_steps": config.train_steps, "num_heldout": num_heldout,
               "inference": settings.to_dict(),
               "langevin_step_size": model.langevin_step_size, "sigma": model.sigma}

    # Training images with their persistent chains: the channel-to-part map, the kernels.
    num_fit = results["num_fit"] = min(num_fit, config.num_images)
    chains = model.chains.numpy()[:num_fit]
    train = to_model_range(train_images[:num_fit]).numpy()
    labels = truth.part_labels[:num_fit]
    fit_dominant = parts_metrics.dominant_channels(
        parts_metrics.bottom_contributions(generator, chains))
    channel_parts = parts_metrics.fit_channel_parts(fit_dominant, labels,
                                                    generator.config.channels[-1])
    patches, in_use = parts_metrics.bottom_patches(generator, chains)
    results["dictionary_recovery"], per_part, _ = parts_metrics.dictionary_recovery(
        patches, truth.parts)
    results["recovery_per_part"] = per_part.tolist()
    (results["kernel_purity"], results["kernels_pure"],
     results["kernels_in_use"]) = parts_metrics.kernel_purity(patches, truth.parts, in_use)
    results["parse_accuracy_train"] = parts_metrics.parse_accuracy(
        fit_dominant, channel_parts, labels)
    results["psnr_train"] = parts_metrics.psnr(train, generator(chains).numpy())

    def infer_and_score(images, part_labels, how):
        z = inference.reconstruct(model, images, settings=how, seed=seed).numpy()
        return score_latents(generator, z, images, part_labels, channel_parts)

    heldout, heldout_truth = heldout_images(config, num_heldout)
    heldout = to_model_range(heldout).numpy()
    results["psnr_heldout"], results["parse_accuracy"] = infer_and_score(
        heldout, heldout_truth.part_labels, settings)
    num_train = min(num_heldout, num_fit)
    results["psnr_train_infer"], results["parse_accuracy_train_infer"] = infer_and_score(
        train[:num_train], labels[:num_train], settings)
    results["psnr_occluded"], results["parse_accuracy_occluded"] = occlusion_scores(
        model, heldout, heldout_truth.part_labels, channel_parts, settings, seed)
    if baseline:
        results["psnr_heldout_plain"], results["parse_accuracy_plain"] = infer_and_score(
            heldout, heldout_truth.part_labels, inference.PLAIN_SETTINGS)
    with open(os.path.join(workdir, "evaluation.json"), "w") as f:
        json.dump(results, f, indent=2)
    return results


def run_label(results):
    k = ",".join(map(str, results["topk"]))
    return f"K = {k}"


def markdown_table(all_results):
    """A markdown table, one row per score and one column per run."""
    lines = ["| | " + " | ".join(run_label(r) for r in all_results) + " |",
             "|---|" + "---|" * len(all_results)]
    for key, label, fmt in ROWS:
        cells = []
        for r in all_results:
            if key not in r:
                cells.append("")
            elif key == "kernel_purity":
                cells.append(f"{r['kernel_purity']:.2f} ({r['kernels_pure']}/"
                             f"{r['kernels_in_use']})")
            else:
                cells.append(fmt.format(r[key]))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv):
    from absl import flags
    from sparse_gen_tf import cli
    cli.start("evaluate", argv)
    values = flags.FLAGS
    try:
        settings = inference.settings_from_flags(values)
        all_results = [evaluate(w, num_heldout=values.num_heldout, num_fit=values.num_fit,
                                settings=settings, baseline=values.baseline,
                                seed=values.seed)
                       for w in values.workdir]
    except UserError as e:
        sys.exit(f"evaluate: error: {e}")
    print(markdown_table(all_results))


def define_flags():
    from absl import flags
    flags.DEFINE_list("workdir", None, "Training run(s) to score, comma separated.",
                      required=True)
    flags.DEFINE_integer("num_heldout", 256, "Held-out images to infer and score.",
                         lower_bound=1)
    flags.DEFINE_integer("num_fit", 512, "Training images that fit the channel-to-part "
                         "map and give the training PSNR.", lower_bound=1)
    flags.DEFINE_boolean("baseline", True, "Also score plain Langevin from N(0, I).")
    flags.DEFINE_integer("seed", 0, "Seeds the inference.", lower_bound=0)
    inference.define_flags()


if __name__ == "__main__":
    from absl import app
    define_flags()
    app.run(main)
