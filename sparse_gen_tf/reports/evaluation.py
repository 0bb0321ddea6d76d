"""Scores a trained generator: reconstructions, sparsity and, on parts, the ground truth.

    python -m sparse_gen_tf.commands.evaluate --workdir=runs/parts[,runs/parts_dense]

For each workdir it writes WORKDIR/evaluation.json, and it prints one markdown table with
a column per run. Every run gets:

  psnr_train            training images, z = their persistent chains
  psnr_train_infer      the first --num_fit training images (and on parts at most
                        --num_heldout), z from `inference.infer` like the held-out ones
  psnr_heldout          held-out images, z from `inference.infer` (the --restarts etc.)
  psnr_heldout_served   held-out images through the exported `reconstruct` signature:
                        the run exported as export/export_saved_model.py does by default
                        (amortized if the run has an inference network, else the search;
                        with the --refine_* and --amortized_* given here as its
                        --reconstruct_refine_* and --reconstruct_amortized_*), loaded with
                        TensorFlow and called (--served)
  nonzero_i             fraction of units of sparse layer i that survive, over the
                        training chains' parses
  dead_channels_i       channels of layer i that no training chain's parse uses
  specificity_i         location specificity of layer i over the training chains'
                        parses: the mean share of a channel's energy at its most-used
                        cell (unit_scores; 1 / cells if it fires everywhere alike)
  sharpness_samples     Laplacian energy of samples from the run's prior (--prior, "prior"
                        in evaluation.json) relative to the training images'
                        (unit_scores.sharpness); sharpness_heldout the same for the
                        held-out reconstructions through inference.infer

Held-out images are fresh draws of the grammar for parts, and the --heldout images for an
image dataset; a run trained without --heldout has no held-out rows. Runs on the
embedded parts dataset are also scored against its ground truth (see parts_scores for
the definitions):

  dictionary_recovery   mean over true parts of the best r with a bottom basis function
  kernel_purity         fraction of bottom kernels in use with |r| > 0.9 to one part
  parse_accuracy        held-out cells whose dominant OR node maps to the true part
  *_served              the same through the exported `reconstruct`
  *_occluded            held-out with the central half hidden from the likelihood,
                        scored on the hidden cells / pixels only
  *_plain               held-out, plain Langevin from N(0, I), 200 steps: the calibration
                        baseline, `inference.PLAIN_SETTINGS`
  validity_*            the fraction of quadrants that are legal derivations of the
                        grammar (`parts_scores.grammar_validity`), and clean_cells_* the
                        fraction of cells holding one part at the data's intensity or
                        nothing: of --num_heldout samples from the run's prior; of the
                        reconstructions g(z_i) of training images (the model's ceiling);
                        and of the training images themselves (the control, 1.0)

Channels are mapped to parts on the first --num_fit training images (persistent chains);
"in use" means surviving in at least one of their parses.

With --attributes (an attribute file in CelebA's format; a face run with --heldout), the
held-out faces' inferred parses are dissected against their labels (dissection.py):

  attribute_auc_i       per sparse layer i, the mean over the localised attributes of
                        the held-out ROC AUC of the best single unit (a channel at a
                        cell), chosen on the other half of the held-out faces
  attribute_balanced_accuracy_i   the same with every unit firing at its top 1/16
  attribute_*_pca       the same for pixel PCA with d components
  dissection            in evaluation.json only: each attribute's chosen units, where
                        they sit, and their scores on both halves

and sets of images are compared with the held-out faces by an attribute classifier, the
--classifier file, trained there on the run's training faces and labels if missing
(sample_quality.py):

  frechet_*             the Fréchet distance of the classifier's penultimate features
  attribute_gap_*       the mean over attributes of the gap in attribute frequencies
                        of _samples (from the prior), _reconstructions (of the held-out
                        faces: the reference) and _train (training faces: the floor)
  classifier_auc_mean   the classifier's mean ROC AUC on the held-out labels; in
                        evaluation.json, "classifier" names its file
"""

import dataclasses
import json
import os
import tempfile

import numpy as np
import tensorflow as tf

from sparse_gen_tf import serving
from sparse_gen_tf.explanation import dissection, parts_scores, sample_quality, unit_scores
from sparse_gen_tf.learning import inference
from sparse_gen_tf.data import attributes as attributes_lib, pipeline
from sparse_gen_tf.data.pipeline import to_model_range
from sparse_gen_tf.errors import UserError
from sparse_gen_tf.model import prior as prior_lib
from sparse_gen_tf.training.run import open_run

ROWS = (("dictionary_recovery", "Dictionary recovery (mean best r)", "{:.3f}"),
        ("kernel_purity", "Kernel purity (clean / in use)", None),
        ("parse_accuracy", "Parse accuracy, held-out", "{:.3f}"),
        ("parse_accuracy_train", "Parse accuracy, training (persistent chains)", "{:.3f}"),
        ("parse_accuracy_train_infer", "Parse accuracy, training, same inference as "
         "held-out", "{:.3f}"),
        ("parse_accuracy_served", "Parse accuracy, held-out, exported reconstruct",
         "{:.3f}"),
        ("psnr_heldout", "PSNR held-out (dB)", "{:.2f}"),
        ("psnr_heldout_served", "PSNR held-out, exported reconstruct (dB)", "{:.2f}"),
        ("psnr_train", "PSNR training, persistent chains (dB)", "{:.2f}"),
        ("prior", "Prior of the samples (--prior)", "{}"),
        ("sharpness_samples", "Sharpness of samples (Laplacian energy / data's)",
         "{:.3f}"),
        ("sharpness_heldout", "Sharpness of held-out reconstructions", "{:.3f}"),
        ("frechet_samples", "Fréchet distance to held-out, samples (attribute "
         "classifier)", "{:.2f}"),
        ("frechet_reconstructions", "Fréchet distance, held-out reconstructions", "{:.2f}"),
        ("frechet_train", "Fréchet distance, training faces (floor)", "{:.2f}"),
        ("attribute_gap_samples", "Attribute-frequency gap, samples", "{:.3f}"),
        ("attribute_gap_reconstructions", "Attribute-frequency gap, reconstructions",
         "{:.3f}"),
        ("attribute_gap_train", "Attribute-frequency gap, training faces (floor)",
         "{:.3f}"),
        ("classifier_auc_mean", "Attribute classifier's mean AUC, held-out", "{:.3f}"),
        ("num_examples", "Training images", "{:d}"),
        ("num_heldout", "Held-out images", "{:d}"),
        ("psnr_train_infer", "PSNR training, same inference as held-out (dB)", "{:.2f}"),
        ("parse_accuracy_occluded", "Parse accuracy, held-out, hidden cells only",
         "{:.3f}"),
        ("psnr_occluded", "PSNR held-out, hidden pixels only (dB)", "{:.2f}"),
        ("parse_accuracy_plain", "Parse accuracy, held-out, plain Langevin", "{:.3f}"),
        ("validity_samples", "Grammar validity, samples from the prior (legal quadrants)",
         "{:.3f}"),
        ("clean_cells_samples", "Clean cells, samples from the prior", "{:.3f}"),
        ("validity_reconstructions", "Grammar validity, reconstructions of training "
         "images", "{:.3f}"),
        ("validity_data", "Grammar validity, training images (control)", "{:.3f}"),
        ("psnr_heldout_plain", "PSNR held-out, plain Langevin (dB)", "{:.2f}"))


def score_latents(generator, z, images, part_labels, channel_parts):
    """(PSNR, parse accuracy) of latents z for images with true labels."""
    dominant = parts_scores.dominant_channels(
        parts_scores.bottom_contributions(generator, z))
    return (parts_scores.psnr(images, generator(z).numpy()),
            parts_scores.parse_accuracy(dominant, channel_parts, part_labels))


def occlusion_scores(model, images, part_labels, channel_parts, settings, seed):
    """(PSNR of the hidden pixels, parse accuracy of the hidden cells) when the central
    half of each image is hidden from the likelihood (`central_occluder`)."""
    generator = model.generator
    observed = inference.central_occluder(images)
    z = inference.reconstruct(model, images, settings=settings, seed=seed,
                              observed=observed).numpy()
    hidden = observed[..., 0] == 0
    grid = part_labels.shape[1]
    cell = images.shape[1] // grid
    hidden_cells = hidden.reshape(len(hidden), grid, cell, grid, cell)[:, :, 0, :, 0]
    dominant = parts_scores.dominant_channels(
        parts_scores.bottom_contributions(generator, z))
    return (parts_scores.psnr(images[hidden], generator(z).numpy()[hidden]),
            parts_scores.parse_accuracy(dominant[hidden_cells], channel_parts,
                                         part_labels[hidden_cells]))


def served_latents(opened, images, batch=64, settings=serving.ReconstructSettings()):
    """z [N, d] for images [N, H, W, 3] in [-1, 1] from the exported `reconstruct`: the
    run exported with `settings` (the export command's defaults unless given; with its
    inference network, if it has one) to a temporary directory, loaded with TensorFlow
    and called, as TF Serving would."""
    model = opened
    with tempfile.TemporaryDirectory() as tmp:
        path = serving.export_generator(model.generator, tmp, settings=settings,
                                       step_size=model.langevin.step_size,
                                       sigma=model.langevin.sigma, chains=model.chains.numpy(),
                                       encoder=model.encoder)
        reconstruct = tf.saved_model.load(path).signatures["reconstruct"]
        return np.concatenate([
            reconstruct(image=tf.constant(serving.to_unit_range(chunk)))["z"].numpy()
            for chunk in np.array_split(images, max(1, -(-len(images) // batch)))])


def sparsity(generator, z, batch=256):
    """{nonzero_i, dead_channels_i} of the parses of z [N, d] (layer i = 1 at the top)."""
    active = [[] for _ in range(generator.num_layers)]
    for chunk in np.array_split(z, max(1, -(-len(z) // batch))):
        for i, activation in enumerate(generator.parse(chunk)["activations"]):
            active[i].append(activation.numpy() != 0)
    results = {}
    for i, masks in enumerate(active, 1):
        masks = np.concatenate(masks)
        results[f"nonzero_{i}"] = float(masks.mean())
        results[f"dead_channels_{i}"] = int((~masks.any(axis=(0, 1, 2))).sum())
    return results


def evaluate(workdir, *, num_heldout=256, num_fit=512, settings=inference.DEFAULT_SETTINGS,
             baseline=True, served=True, seed=0, attributes=None, classifier=None,
             progress=None):
    """Computes the scores of workdir's latest checkpoint; writes evaluation.json.

    attributes: the path of an attribute file, to dissect the held-out parses and score
    the samples (sample_quality); classifier: the attribute classifier's .keras file
    (default WORKDIR/attribute_classifier.keras), trained there if missing. progress:
    called with a short sentence before each long stage (the inferences)."""
    say = progress or (lambda message: None)
    say("opening the run")
    opened = open_run(workdir)
    config, model = opened.config, opened
    # Read first, so that a bad file or a run without labels fails before any inference.
    labels = (None if attributes is None
              else attributes_lib.labels_for_run(config, attributes))
    generator = model.generator
    chains = model.chains.numpy()
    results = {"workdir": workdir, "dataset": config.dataset, "topk": list(config.generator.topk),
               "train_steps": config.train_steps, "num_examples": opened.num_examples,
               "checkpoint": os.path.basename(opened.checkpoint),
               "inference": settings.to_dict(),
               "langevin_step_size": model.langevin.step_size, "sigma": model.langevin.sigma}
    results.update(sparsity(generator, chains))
    data = opened.data()
    train = to_model_range(data.images).numpy()
    results["psnr_train"] = parts_scores.psnr(train, generator(chains).numpy())
    results.update(unit_scores.layer_specificities(generator, chains))
    results["prior"] = model.prior.kind
    samples = draw_samples(model, min(num_heldout, len(train)), seed)
    results["sharpness_samples"] = unit_scores.sharpness(samples, train)
    heldout, heldout_truth = pipeline.heldout_images(config, num_heldout, data)
    heldout = to_model_range(heldout).numpy()
    results["num_heldout"] = len(heldout)
    if labels is not None and not len(heldout):
        raise UserError(f"{workdir} holds no images out, so --attributes has no faces to "
                        "dissect; train with --heldout=N")
    if labels is not None:
        classifier = classifier or os.path.join(workdir, "attribute_classifier.keras")
        classifier_model = sample_quality.obtain_classifier(classifier, data, labels, config)

    # The export command's defaults, with the refinements asked for here: what
    # `export --reconstruct_refine_steps=... --reconstruct_amortized_steps=...` writes.
    served_settings = dataclasses.replace(
        serving.ReconstructSettings(), refine_steps=settings.refine_steps,
        refine_step_size=settings.refine_step_size,
        amortized_steps=settings.amortized_steps,
        amortized_step_size=settings.amortized_step_size,
        amortized_momentum=settings.amortized_momentum)

    def infer(images, how=settings, what="images"):
        say(f"inferring z of {len(images)} {what}")
        return inference.reconstruct(model, images, settings=how, seed=seed).numpy()

    if config.dataset != "parts":
        num_train = min(num_fit, len(train))
        results["psnr_train_infer"] = parts_scores.psnr(
            train[:num_train], generator(infer(train[:num_train],
                                             what="training images")).numpy())
        if len(heldout):
            z = infer(heldout, what="held-out images")
            reconstructions = generator(z).numpy()
            results["psnr_heldout"] = parts_scores.psnr(heldout, reconstructions)
            results["sharpness_heldout"] = unit_scores.sharpness(reconstructions, heldout)
            if served:
                say("exporting the reconstruct signature and running it")
                results["psnr_heldout_served"] = parts_scores.psnr(
                    heldout, generator(served_latents(opened, heldout,
                                                     settings=served_settings)).numpy())
            if labels is not None:
                results["dissection"] = dissection.dissect(
                    generator, z, heldout, train, labels.heldout[:len(heldout)],
                    labels.names)
                results["dissection"]["checkpoint"] = os.path.basename(opened.checkpoint)
                results.update(dissection.summary_scores(results["dissection"]))
                results.update(sample_quality.run_scores(
                    classifier, classifier_model, labels, heldout,
                    {"samples": samples, "reconstructions": reconstructions,
                     "train": train[:len(heldout)]}))
        return write_results(workdir, results)

    truth = data.ground_truth
    problem = parts_scores.check_geometry(generator.config, truth.parts.shape[1])
    if problem:
        raise UserError(f"cannot score {workdir} against the parts grammar: {problem}")
    # Training images with their persistent chains: the channel-to-part map, the kernels.
    num_fit = results["num_fit"] = min(num_fit, len(train))
    fit_chains, train, labels = chains[:num_fit], train[:num_fit], truth.part_labels[:num_fit]
    fit_dominant = parts_scores.dominant_channels(
        parts_scores.bottom_contributions(generator, fit_chains))
    channel_parts = parts_scores.fit_channel_parts(fit_dominant, labels,
                                                    generator.config.channels[-1])
    patches, in_use = parts_scores.bottom_patches(generator, fit_chains)
    results["dictionary_recovery"], per_part, _ = parts_scores.dictionary_recovery(
        patches, truth.parts)
    results["recovery_per_part"] = per_part.tolist()
    (results["kernel_purity"], results["kernels_pure"],
     results["kernels_in_use"]) = parts_scores.kernel_purity(patches, truth.parts, in_use)
    results["parse_accuracy_train"] = parts_scores.parse_accuracy(
        fit_dominant, channel_parts, labels)

    def score(z, images, part_labels):
        return score_latents(generator, z, images, part_labels, channel_parts)

    heldout_labels = heldout_truth.part_labels
    results["psnr_heldout"], results["parse_accuracy"] = score(
        infer(heldout, what="held-out images"), heldout, heldout_labels)
    if served:
        say("exporting the reconstruct signature and running it")
        results["psnr_heldout_served"], results["parse_accuracy_served"] = score(
            served_latents(opened, heldout, settings=served_settings), heldout,
            heldout_labels)
    num_train = min(num_heldout, num_fit)
    results["psnr_train_infer"], results["parse_accuracy_train_infer"] = score(
        infer(train[:num_train], what="training images"), train[:num_train],
        labels[:num_train])
    say(f"inferring z of {len(heldout)} occluded held-out images")
    results["psnr_occluded"], results["parse_accuracy_occluded"] = occlusion_scores(
        model, heldout, heldout_labels, channel_parts, settings, seed)
    if baseline:
        results["psnr_heldout_plain"], results["parse_accuracy_plain"] = score(
            infer(heldout, inference.PLAIN_SETTINGS, "held-out images (plain Langevin)"),
            heldout, heldout_labels)
    say("scoring samples of the prior")
    results.update(sample_scores(model, train, truth, num_heldout, seed))
    return write_results(workdir, results)


def draw_samples(model, num, seed):
    """num samples [num, H, W, 3] in [-1, 1] from the model's prior (`model.prior`)."""
    return model.prior.sample(model.generator,
                              prior_lib.sample_seeds(num, seed))["image"].numpy()


def sample_scores(model, train, truth, num_samples, seed):
    """{validity_*, clean_cells_*} of samples from the model's prior, of the
    reconstructions of training images g(z_i), and of the training images [N, H, W, 3] in
    [-1, 1]."""
    scores = {}
    chains = model.chains.numpy()
    for name, images in (("samples", draw_samples(model, num_samples, seed)),
                         ("reconstructions", model.generator(chains[:num_samples]).numpy()),
                         ("data", train[:num_samples])):
        scores[f"validity_{name}"], scores[f"clean_cells_{name}"] = (
            parts_scores.grammar_validity(images, truth))
    return scores


def write_results(workdir, results):
    with open(os.path.join(workdir, "evaluation.json"), "w") as f:
        json.dump(results, f, indent=2)
    return results


def run_label(results):
    k = ",".join(map(str, results["topk"]))
    return f"{results['dataset']}, K = {k}"


def uniform_specificity(all_results, layer):
    """The specificity of a channel firing alike at every cell of `layer` (1 / cells)."""
    return next((r[f"specificity_uniform_{layer}"] for r in all_results
                 if f"specificity_uniform_{layer}" in r), float("nan"))


def markdown_table(all_results):
    """A markdown table, one row per score that some run has, and one column per run."""
    lines = ["| | " + " | ".join(run_label(r) for r in all_results) + " |",
             "|---|" + "---|" * len(all_results)]
    layers = max(len(r["topk"]) for r in all_results)
    sparsity_rows = [row for i in range(1, layers + 1) for row in (
        (f"nonzero_{i}", f"Surviving units, layer {i} (fraction)", "{:.4f}"),
        (f"dead_channels_{i}", f"Dead channels, layer {i}", "{:d}"),
        (f"specificity_{i}", f"Location specificity, layer {i} (uniform "
         f"{uniform_specificity(all_results, i):.3f})", "{:.3f}"))]
    for key, label, fmt in ROWS + tuple(sparsity_rows) + dissection.table_rows(layers):
        if not any(key in r for r in all_results):
            continue
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
