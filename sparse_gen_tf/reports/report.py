"""Explains a trained generator: kernels, parse figures and parse graphs, as files.

    python -m sparse_gen_tf.commands.explain --workdir=runs/parts [--output_dir=DIR]

writes into DIR (default WORKDIR/explain):

  kernels_bottom.png         the bottom kernels as image patches (Fig. 2a)
  kernels_top.png            each top unit as its basis function in image space (Fig. 2b)
  kernels.png                the two above, one over the other
  kernels_*_normalised.png   the same, each unit min-max stretched to its own range: on
                             real images a kernel is faint beside the bias and its shape
                             shows only this way (visualize.normalise_each)
  sample_<i>.png, .json      the parse figure (Fig. 3) and And-Or parse graph of a
                             sample from the run's prior (--prior; the grammar's samples
                             are parses with no z, "latent": [] in the graph)
  image_<i>.png, .json       the same for held-out images, z inferred by `inference.infer`
  image_<i>_normalised.png   that parse figure with each OR node stretched to its range
                             (training images when an image run held none out)
  reconstructions.png        held-out images (odd columns) beside g(z) (even columns)
  occlusion.png              the same with the central half hidden from the likelihood
  summary.json               the files, inference settings, and the Eq. (5) identity
                             error of every parse and layer
  index.html                 the unit dashboard of all the above (dashboard.py), offline;
                             --nohtml skips it. Units are labelled with the attributes
                             they detect when WORKDIR/evaluation.json holds a dissection
                             of this checkpoint (`evaluate --attributes`)

Held-out images are images the model was not trained on: for the parts dataset, new
draws of its grammar (another image seed); for image datasets, the images the run set
aside with --heldout. A run trained without --heldout has none, so its training images
are parsed instead, and summary.json says so ("images_are": "training").
"""

import json
import os

import numpy as np

from sparse_gen_tf.explanation import basis, dissection, parse_graph, visualize
from sparse_gen_tf.reports import dashboard
from sparse_gen_tf.learning import inference
from sparse_gen_tf.data import pipeline
from sparse_gen_tf.errors import UserError
from sparse_gen_tf.model import prior as prior_lib
from sparse_gen_tf.explanation.figures import image_grid, write_png
from sparse_gen_tf.training.run import open_run


def stack(*images, gap=8):
    """uint8 images [h_i, w_i, 3] one above the other, left-aligned, on white."""
    width = max(image.shape[1] for image in images)
    padded = [np.pad(image, [(0, gap), (0, width - image.shape[1]), (0, 0)],
                     constant_values=255) for image in images]
    return np.concatenate(padded)[:-gap]


def pair_grid(pairs):
    """(image, reconstruction) pairs [2n, H, W, 3], four pairs a row, drawn at about 96
    pixels a side."""
    grid = image_grid(pairs, columns=min(len(pairs), 8))
    return visualize.upscale(grid, max(1, 96 // pairs.shape[1]))


def row_of(parse, i):
    """Example i of a batched parse dict, as a parse of batch 1."""
    return {key: [v[i:i + 1] for v in value] if isinstance(value, list) else value[i:i + 1]
            for key, value in parse.items()}


def explain_latents(generator, z, output_dir, prefix, normalised=False, parse=None):
    """Writes <prefix>_<i>.png (parse figure) and .json (parse graph) for each z [n, d],
    and with normalised=True also <prefix>_<i>_normalised.png; returns [{file,
    identity_error per layer}]. parse: the parses instead, with z None, for samples
    of the grammar prior (which have no z)."""
    parse = parse if parse is not None else generator.parse(z)
    graphs = parse_graph.build(generator, z, parse)
    errors = [basis.identity_error(generator, parse, layer).numpy()
              for layer in range(1, generator.num_layers + 1)]
    records = []
    for i, graph in enumerate(graphs):
        one = row_of(parse, i)
        write_png(os.path.join(output_dir, f"{prefix}_{i}.png"),
                  visualize.parse_figure(generator, None, parse=one))
        if normalised:
            write_png(os.path.join(output_dir, f"{prefix}_{i}_normalised.png"),
                      visualize.parse_figure(generator, None, normalised=True, parse=one))
        with open(os.path.join(output_dir, f"{prefix}_{i}.json"), "w") as f:
            f.write(graph.to_json())
        records.append({"figure": f"{prefix}_{i}.png", "parse_graph": f"{prefix}_{i}.json",
                        "eq5_relative_error": [float(e[i]) for e in errors]})
    return records


def explain(workdir, output_dir=None, *, num_samples=4, num_images=4,
            settings=inference.DEFAULT_SETTINGS, seed=0, html=True, progress=None):
    """Writes the explanation files of workdir's latest checkpoint; returns output_dir.

    progress: called with a short sentence before each long stage."""
    say = progress or (lambda message: None)
    say("opening the run")
    opened = open_run(workdir)
    config, model = opened.config, opened
    generator = model.generator
    output_dir = output_dir or os.path.join(workdir, "explain")
    try:
        os.makedirs(output_dir, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create --output_dir={output_dir} ({e.strerror}); choose "
                        "a writable directory") from None

    say("drawing the kernels")
    latents = visualize.sample_latents(generator, max(128, num_samples), seed)
    figures = visualize.kernel_figures(generator, latents)
    write_png(os.path.join(output_dir, "kernels_bottom.png"), figures["bottom"])
    write_png(os.path.join(output_dir, "kernels_top.png"), figures["top"])
    write_png(os.path.join(output_dir, "kernels.png"), stack(figures["bottom"],
                                                             figures["top"]))
    for part in ("bottom", "top"):
        write_png(os.path.join(output_dir, f"kernels_{part}_normalised.png"),
                  figures[f"{part}_normalised"])
    write_png(os.path.join(output_dir, "kernels_normalised.png"),
              stack(figures["bottom_normalised"], figures["top_normalised"]))
    summary = {"workdir": workdir, "topk": list(config.generator.topk), "prior": model.prior.kind,
               "samples": []}
    if num_samples:
        samples = model.prior.sample(generator, prior_lib.sample_seeds(num_samples, seed))
        summary["samples"] = explain_latents(generator, samples.get("z"), output_dir,
                                             "sample", parse=samples)

    if num_images:
        say(f"inferring z of {num_images} images and parsing them")
        images, _ = pipeline.heldout_images(config, num_images)
        summary["images_are"] = "heldout"
        if not len(images):  # an image run without --heldout: parse training images
            images = opened.data().images[:num_images]
            summary["images_are"] = "training"
        images = pipeline.to_model_range(images).numpy()
        z = inference.reconstruct(model, images, settings=settings, seed=seed).numpy()
        recon = generator(z).numpy()
        pairs = np.stack([images, recon], 1).reshape((-1,) + images.shape[1:])
        write_png(os.path.join(output_dir, "reconstructions.png"), pair_grid(pairs))
        summary["images"] = explain_latents(generator, z, output_dir, "image",
                                            normalised=True)
        # Occlusion recovery: the likelihood sees only the observed pixels.
        observed = inference.central_occluder(images)
        z = inference.reconstruct(model, images, settings=settings, seed=seed,
                                  observed=observed).numpy()
        shown = images * observed  # hidden pixels drawn mid-grey
        pairs = np.stack([shown, generator(z).numpy()], 1).reshape((-1,) + images.shape[1:])
        write_png(os.path.join(output_dir, "occlusion.png"), pair_grid(pairs))
        summary["inference"] = settings.to_dict()
    with open(os.path.join(output_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    if html:
        say("writing the dashboard")
        dashboard.write_dashboard(
            model, config, output_dir, summary,
            unit_labels=dissection.read_unit_labels(workdir, opened.checkpoint))
    return output_dir
