"""TensorBoard summaries a run writes every --figures_every epochs and at its end, just
after fitting the prior: image grids of samples (from the run's prior) and
reconstructions, the kernel and parse figures (Figs. 2-3), and, on the parts dataset,
the grammar validity of samples. `Checkpointing(on_figures=[ImageSummaries(...)])` calls
them."""

import numpy as np
import tensorflow as tf

from sparse_gen_tf.explanation import parts_scores
from sparse_gen_tf.explanation.figures import image_grid
from sparse_gen_tf.explanation.visualize import kernel_figures, parse_figure, sample_latents
from sparse_gen_tf.model import prior as prior_lib


class ImageSummaries:
    """Writes image grids to TensorBoard: samples from the model's prior (`model.prior`,
    fitted just before), and training images beside their reconstructions g(z_i)
    from the persistent chains. For cooperative learning also
    "data_reconstructions_revisions": each training image, g(z_i) and the descriptor's
    revision Ỹ_i of it, i.e. what the generator is taught (cooperative.py)."""

    def __init__(self, model, data, logdir, num_images=16, seed=0):
        self.model, self.writer = model, tf.summary.create_file_writer(logdir)
        n = min(num_images, data.num_examples)
        self.ids = np.arange(n)
        self.images = data.images[:n]
        self.seeds = prior_lib.sample_seeds(n, seed)
        self.extra = []  # callables (writer, step) adding more summaries

    def __call__(self, step):
        samples = self.model.prior.sample(self.model.generator, self.seeds)["image"].numpy()
        recon = self.model.generator(tf.gather(self.model.chains.value, self.ids)).numpy()
        pairs = np.stack([self.images.astype(np.float32) / 127.5 - 1.0, recon], 1)
        pairs = pairs.reshape((-1,) + recon.shape[1:])
        # record_if(True): whatever recording condition a caller has set (Keras' own
        # TensorBoard callback gates every summary on its update_freq), these images are
        # always written.
        with self.writer.as_default(step=step), tf.summary.record_if(True):
            tf.summary.image("samples", image_grid(samples)[None], max_outputs=1,
                             description=f"Samples from the {self.model.prior.kind} prior "
                             "(--prior), fitted to the chains at this step, for the "
                             "same seeds at every step.")
            tf.summary.image("data_and_reconstructions",
                             image_grid(pairs, columns=8)[None], max_outputs=1,
                             description="Training images (odd columns) beside g(z_i) "
                             "(even columns), z_i their persistent Langevin chains (Eq. "
                             "10): how well the model explains the data it trains on.")
            if hasattr(self.model, "revise"):
                # A fixed seed, so that grids at different steps differ by the model only.
                revised = self.model.revise(recon, seed=tf.constant([0, 9])).numpy()
                triples = np.stack([pairs[0::2], recon, np.clip(revised, -1, 1)], 1)
                tf.summary.image("data_reconstructions_revisions", image_grid(
                    triples.reshape((-1,) + recon.shape[1:]), columns=6)[None],
                    max_outputs=1, description="Each training image Y_i, g(z_i), and the "
                    "descriptor's revision of g(z_i) (cooperative learning, §2.4): what "
                    "the generator is taught to paint.")
            for extra in self.extra:
                extra(step)
        self.writer.flush()


def explanation_summaries(model, num_samples=128, seed=0):
    """A callable(step) writing the kernel grids and the parse of training image 0 (from
    its persistent chain) as TensorBoard images; call it inside a writer's context, as
    `ImageSummaries.extra` does. Drawing them costs about as much as the prior's fit (a
    sixth of a parts run's time when it came at every checkpoint), hence
    --figures_every."""
    z = sample_latents(model.generator, num_samples, seed)

    def write(step):
        figures = kernel_figures(model.generator, z)
        tf.summary.image("kernels/bottom", figures["bottom"][None], step=step,
                         description="Fig. 2a: each bottom kernel as the patch it paints, "
                         "tanh(bias + s ker_c) at its mean coefficient s over samples; "
                         "units no sample uses are dimmed.")
        tf.summary.image("kernels/top_in_image_space", figures["top"][None], step=step,
                         description="Fig. 2b: each top unit as its basis function in "
                         "image space (Eq. 6), tanh(bias + s_j B_j) at its largest "
                         "coefficient over samples; unused units are grey.")
        tf.summary.image("kernels/bottom_normalised", figures["bottom_normalised"][None],
                         step=step, description="Fig. 2a, normalised: each bottom kernel "
                         "ker_c min-max stretched to its own range, which shows its shape "
                         "where it is faint beside the bias (faces); unused units dimmed.")
        tf.summary.image("kernels/top_in_image_space_normalised",
                         figures["top_normalised"][None], step=step,
                         description="Fig. 2b, normalised: each top unit's s_j B_j (Eq. 6) "
                         "at its largest coefficient over samples, min-max stretched per "
                         "unit; unused units are grey.")
        chain = model.chains.value[0].numpy()
        tf.summary.image("parse/train_0", parse_figure(model.generator, chain)[None],
                         step=step, description="Fig. 3: the And-Or parse of training "
                         "image 0 from its chain: per layer the image with its AND cells, "
                         "then each cell's OR nodes (surviving units) with coefficients.")
        tf.summary.image("parse/train_0_normalised",
                         parse_figure(model.generator, chain, normalised=True)[None],
                         step=step, description="Fig. 3, normalised: the same parse with "
                         "each OR node drawn as its own s_j B_j over its cell, min-max "
                         "stretched, so that faint basis functions show their shape.")

    return write


def grammar_summaries(model, truth, num_samples=256, seed=0):
    """A callable(step) writing, for the parts dataset, how often samples from the model's
    prior and the reconstructions of training images are legal derivations of its
    grammar (`parts_scores.grammar_validity`) as TensorBoard scalars; call it inside a
    writer's context, as `ImageSummaries.extra` does."""
    seeds = prior_lib.sample_seeds(num_samples, seed + 1)

    def write(step):
        samples = model.prior.sample(model.generator, seeds)["image"]
        reconstructions = model.generator(model.chains.value[:num_samples])
        for name, images in (("samples", samples), ("reconstructions", reconstructions)):
            validity, clean = parts_scores.grammar_validity(images.numpy(), truth)
            tf.summary.scalar(f"grammar/validity_{name}", validity, step=step,
                              description=f"Fraction of quadrants of {name} that are "
                              "legal derivations of the parts grammar: four clean cells "
                              "forming one of the quadrant's composites.")
            tf.summary.scalar(f"grammar/clean_cells_{name}", clean, step=step,
                              description=f"Fraction of cells of {name} holding one part "
                              "at the data's intensity, or nothing.")

    return write
