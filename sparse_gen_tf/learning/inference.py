"""Inference of z for images the model has not seen: Langevin (Eq. 10) made robust.

With TopK the posterior p(z | Y) is multimodal: every change of a TopK or ReLU switch is a
change of linear piece, and a chain started from N(0, I) often settles on a parse that
explains some cells with the wrong parts. A persistent training chain rarely has this
problem, because it has followed its image for the whole run. `infer` closes the gap by

  1. starting points: `restarts` chains per image, drawn from N(0, I); if a bank of
     latents is given (the persistent chains of the training images), the best-scoring
     bank entries replace the first draws, where "best" is the log joint of Eq. (11) at
     the bank entry: the nearest training reconstruction, counting only observed pixels;
  2. annealing: the chains first run with a larger σ, lowered geometrically to the
     model's σ in `anneal_stages` stages, so they can cross between pieces while the
     likelihood is still flat;
  3. selection: each image keeps the chain with the highest log joint (Eq. 11);
  4. refinement: `refine_steps` noise-free steps (gradient ascent on Eq. 11) on the kept
     chain, which returns the posterior mode near it rather than one noisy sample.

Everything is standard TF ops with static shapes (restarts and stages are Python ints), so
`tf.function(infer, jit_compile=True)` compiles it whole.

The amortized inference (`amortized`) replaces the search by one guess: the inference
network q(z | Y) (model/encoder.py, trained to maximise Eq. 11 at its guess,
learning/amortized.py) gives E(Y), and a few refinement steps (4.), with heavy-ball
momentum, climb Eq. (11) from it. `InferenceSettings.method` chooses.

The restarts with bank starts are what bring held-out images up to the same inference on
training images; annealing and refinement are off by default because they did not pay at
the training step size. Refinement with its own smaller step (refine_step_size) does pay
on faces, and benchmarks/paper_experiments.py uses it. The figures: docs/explanation.md,
"Why these inference settings", and docs/faces_and_bricks.md (refinement).
"""

import dataclasses
import functools

import numpy as np
import tensorflow as tf

from sparse_gen_tf.errors import UserError
from sparse_gen_tf.model import clusters
from sparse_gen_tf.model.layers import matmul
from sparse_gen_tf.learning.langevin import langevin, log_joint


METHODS = ("search", "amortized")
NO_ENCODER = ("this run has no inference network q(z | Y) for the amortized inference; "
              "fit one with python -m sparse_gen_tf.commands.fit_encoder --workdir=RUN (or train "
              "with --encoder), or use the search")
# The amortized inference's refinement: noise-free steps from the network's guess, their
# δ_r and their momentum β (heavy-ball gradient ascent, `langevin(momentum=...)`). Noise
# costs the guess's precision; with momentum the guess alone lands within about 0.1 dB of
# the search's held-out PSNR in 20 steps, where 30 plain steps at δ_r = 0.1 stayed 0.3 dB
# below (parts and faces runs; BENCHMARKS.md, "Amortized reconstruct"). 20 steps, not 30:
# at batch 1 a step of one image is all op dispatch, so the steps are the latency.
AMORTIZED_STEPS = 20
AMORTIZED_STEP_SIZE = 0.14
AMORTIZED_MOMENTUM = 0.6
# Starts of the amortized inference: the guess and the best starts - 1 bank entries, each
# given AMORTIZED_LANGEVIN_STEPS Langevin steps at the run's δ, then refined, the best
# kept (`amortized`). The default, the guess alone without Langevin steps: with the
# momentum refinement, the extra starts and their noise no longer paid their cost.
AMORTIZED_STARTS = 1
AMORTIZED_LANGEVIN_STEPS = 0


@dataclasses.dataclass(frozen=True)
class InferenceSettings:
    """How `reconstruct` runs `infer`; δ and σ always come from the trained model.

    method: "search", `infer` with the fields below; "amortized", `amortized`: the
      model's inference network (`model.encoder`), then amortized_steps refinement steps
      of step amortized_step_size and momentum amortized_momentum, from the guess and
      amortized_starts - 1 of the persistent chains, each after amortized_langevin_steps
      Langevin steps at the model's δ (the best kept).
    use_bank: start from the persistent chains of the training images (the model's
    `chains`), in addition to N(0, I) draws.
    refine_step_size: δ_r of the refinement; None takes the model's δ.
    """
    method: str = "search"
    amortized_steps: int = AMORTIZED_STEPS
    amortized_step_size: float = AMORTIZED_STEP_SIZE
    amortized_momentum: float = AMORTIZED_MOMENTUM
    amortized_starts: int = AMORTIZED_STARTS
    amortized_langevin_steps: int = AMORTIZED_LANGEVIN_STEPS
    steps: int = 100
    restarts: int = 16
    anneal_sigma: float = 1.0
    anneal_stages: int = 1
    refine_steps: int = 0
    use_bank: bool = True
    refine_step_size: float = None

    def to_dict(self):
        return dataclasses.asdict(self)


DEFAULT_SETTINGS = InferenceSettings()
AMORTIZED_SETTINGS = InferenceSettings(method="amortized")
# The calibration's plain Langevin: one chain from N(0, I) for 200 steps.
PLAIN_SETTINGS = InferenceSettings(steps=200, restarts=1, use_bank=False)


def _energies_against_bank(generator, images, bank, sigma, observed,
                           batch_invariant=False):
    """-log p(z_m, Y_b) of Eq. (11) for every image b and bank entry m: [batch, M].

    ‖o ⊙ (Y - g)‖² expands into three terms so that the whole [batch, M] table is one
    matmul, not a [batch, M, H, W, 3] tensor; with batch_invariant each image's row is
    its own product (`layers.matmul`), the same bits in any batch.
    """
    rendered = tf.reshape(generator(bank), [tf.shape(bank)[0], -1])  # [M, D]
    flat = tf.reshape(images, [tf.shape(images)[0], -1])  # [B, D]
    if observed is None:
        weight = tf.ones_like(flat)
    else:
        weight = tf.reshape(tf.broadcast_to(tf.cast(observed, images.dtype),
                                            tf.shape(images)), tf.shape(flat))
    rendered_t = tf.transpose(rendered)  # [D, M]
    squared = (tf.reduce_sum(weight * tf.square(flat), -1, keepdims=True)
               - 2.0 * matmul(weight * flat, rendered_t, batch_invariant)
               + matmul(weight, tf.square(rendered_t), batch_invariant))
    prior = 0.5 * tf.reduce_sum(tf.square(bank), -1)
    return squared / (2.0 * sigma ** 2) + prior[None, :]


def guess(encoder, images, observed=None):
    """The inference network's z [batch, d] for images [batch, H, W, 3]. With observed
    given, it sees only the observed pixels (the hidden ones at 0, mid-grey): the hidden
    pixels must not inform z, as they do not inform the likelihood."""
    if observed is not None:
        images = images * tf.cast(observed, images.dtype)
    return tf.cast(encoder(images), images.dtype)


def starting_points(generator, images, seed, *, restarts, sigma, bank=None,
                    observed=None, encoder=None):
    """Initial latents [restarts, batch, d]: the inference network's guess (if encoder),
    the best bank entries, then N(0, I) draws."""
    batch = tf.shape(images)[0]
    d = generator.config.latent_dim
    z0 = tf.random.stateless_normal([restarts, batch, d], seed)
    chosen = [] if encoder is None else [guess(encoder, images, observed)[None]]
    if bank is not None:
        bank = tf.convert_to_tensor(bank, images.dtype)
        from_bank = min(restarts - len(chosen), int(bank.shape[0]))
        if from_bank > 0:
            energies = _energies_against_bank(generator, images, bank, sigma, observed)
            _, nearest = tf.math.top_k(-energies, k=from_bank)  # [batch, from_bank]
            chosen.append(tf.transpose(tf.gather(bank, nearest), [1, 0, 2]))
    if not chosen:
        return z0
    chosen = tf.concat(chosen, axis=0)
    return tf.concat([chosen, z0[chosen.shape[0]:]], axis=0)


def infer(generator, images, *, steps, step_size, sigma, restarts=1, seed=0,
          observed=None, bank=None, anneal_sigma=1.0, anneal_stages=1, refine_steps=0,
          refine_step_size=None, encoder=None):
    """Infers z for images: restarts, σ annealing, best-chain selection, refinement.

    Args:
      generator: a `Generator` (any callable z -> images with `.config.latent_dim`).
      images: [batch, H, W, 3] in [-1, 1].
      steps: Langevin steps per chain, split evenly over the annealing stages.
      step_size, sigma: δ and σ of Eq. (10)-(11); take them from the run's LangevinConfig.
      restarts: chains per image (Python int); the one with the highest log joint wins.
      seed: int, or an int32 [2] stateless seed; the same seed gives the same z.
      observed: optional 0/1 [batch, H, W, 1 or 3]: the likelihood counts only these
        pixels, in every stage (occlusion recovery); z itself is never masked.
      bank: optional [M, d] latents to start from, e.g. the training chains.
      anneal_sigma: the first stage's σ is anneal_sigma * sigma (1 = no annealing).
      anneal_stages: number of σ stages, geometric from anneal_sigma * σ to σ.
      refine_steps: noise-free steps on the selected chain at the end: gradient ascent
        on Eq. (11), z <- z + δ_r²/2 ∂/∂z log p(z, Y).
      refine_step_size: δ_r of those steps; None takes step_size. Gradient ascent needs a
        smaller step than Langevin: at the training δ = 0.3 it overshoots.
      encoder: optional inference network q(z | Y) (`model.encoder`): its guess is the
        first starting point, before the bank's; see `amortized`.
    Returns:
      z [batch, d].
    """
    images = tf.convert_to_tensor(images, tf.float32)
    seed = tf.cast(seed, tf.int32)
    if seed.shape.rank == 0:  # an integer seed: the stateless ops want two
        seed = tf.stack([seed, 0])
    batch = tf.shape(images)[0]
    d = generator.config.latent_dim
    z = starting_points(generator, images, seed, restarts=restarts, sigma=sigma, bank=bank,
                        observed=observed, encoder=encoder)
    z = tf.reshape(z, [-1, d])  # [restarts * batch, d], restart-major
    tiled = tf.tile(images, [restarts, 1, 1, 1])
    tiled_observed = None if observed is None else tf.tile(observed, [restarts, 1, 1, 1])

    stages = max(int(anneal_stages), 1)
    per_stage = [steps // stages + (1 if i < steps % stages else 0) for i in range(stages)]
    for i, stage_steps in enumerate(per_stage):
        ratio = anneal_sigma ** (1.0 - i / (stages - 1)) if stages > 1 else 1.0
        stage_seed = tf.random.experimental.stateless_fold_in(seed, i + 1)
        z = langevin(generator, z, tiled, stage_seed, steps=stage_steps,
                     step_size=step_size, sigma=sigma * ratio, observed=tiled_observed)

    if restarts > 1:  # one chain is its own winner
        log_likelihood, log_prior = log_joint(generator, z, tiled, sigma, tiled_observed)
        score = tf.reshape(log_likelihood + log_prior, [restarts, batch])
        best = tf.argmax(score, axis=0, output_type=tf.int32)  # [batch]
        z = tf.gather_nd(tf.reshape(z, [restarts, batch, d]),
                         tf.stack([best, tf.range(batch)], axis=-1))
    if refine_steps:
        z = langevin(generator, z, images, seed, steps=refine_steps,
                     step_size=step_size if refine_step_size is None else refine_step_size,
                     sigma=sigma, noise=False, observed=observed)
    return z


def amortized(generator, encoder, images, *, steps, step_size, sigma, observed=None,
              bank=None, starts=1, langevin_steps=0, langevin_step_size=None,
              momentum=0.0):
    """The amortized inference of z [batch, d] for images [batch, H, W, 3] in [-1, 1]:
    the inference network's guess E(Y) (`guess`), then `steps` noise-free steps of
    Eq. (10) at δ = step_size (gradient ascent on Eq. 11), as `infer` refines its best
    chain, with heavy-ball momentum β = momentum (`langevin`; 0, plain steps). One pass
    of the network and `steps` gradients per start, against `infer`'s restarts x steps;
    no random draw, so a row's z is a function of its image alone.

    starts > 1 (with a bank [M, d], e.g. k-means centroids of the training chains): the
    guess and the starts - 1 bank entries of highest log joint (Eq. 11) for the image
    are all refined, as one batch of starts x batch rows, and each image keeps the one
    of highest log joint. The guess alone sometimes settles on a parse with a wrong part
    in a cell, a neighbouring linear piece that the noise-free steps cannot leave; a
    start from another parse can.

    langevin_steps > 0: before the refinement, that many Langevin steps (Eq. 10, with
    noise, δ = langevin_step_size) from every start, as the search's chains take, so that
    a start can cross into a better piece. The noise is a fixed draw per start, the same
    for every image (`langevin(noise_groups=...)`): a row's z still depends on its image
    alone. With plain refinement steps, 20 of them with 4 starts took a parts run's
    held-out PSNR from 1.1 dB below the search's to 0.2 dB below; with momentum (the
    default, `AMORTIZED_MOMENTUM`) the guess alone comes as close in a tenth of the
    row-steps, and the extra starts are off by default (BENCHMARKS.md, "Amortized
    reconstruct").

    observed: optional [batch, H, W, 1 or 3] 0/1 mask; the network sees and the
    likelihood counts the observed pixels only.
    """
    images = tf.convert_to_tensor(images, tf.float32)
    batch_invariant = bool(getattr(generator, "batch_invariant", False))
    z = guess(encoder, images, observed)[None]  # [1, batch, d]
    if starts > 1 and bank is not None:
        bank = tf.convert_to_tensor(bank, images.dtype)
        from_bank = min(int(starts) - 1, int(bank.shape[0]))
        energies = _energies_against_bank(generator, images, bank, sigma, observed,
                                          batch_invariant)
        _, nearest = tf.math.top_k(-energies, k=from_bank)  # [batch, from_bank]
        z = tf.concat([z, tf.transpose(tf.gather(bank, nearest), [1, 0, 2])], axis=0)
    count, batch, d = z.shape[0], tf.shape(images)[0], generator.config.latent_dim
    z = tf.reshape(z, [-1, d])  # [count * batch, d], start-major
    tiled = tf.tile(images, [count, 1, 1, 1])
    tiled_observed = None if observed is None else tf.tile(observed, [count, 1, 1, 1])
    z = langevin(generator, z, tiled, tf.constant([0, 1]), steps=langevin_steps,
                 step_size=langevin_step_size, sigma=sigma, observed=tiled_observed,
                 noise_groups=count)
    z = langevin(generator, z, tiled, tf.constant([0, 0]), steps=steps,
                 step_size=step_size, sigma=sigma, noise=False, observed=tiled_observed,
                 momentum=momentum)
    if count == 1:
        return z
    log_likelihood, log_prior = log_joint(generator, z, tiled, sigma, tiled_observed)
    score = tf.reshape(log_likelihood + log_prior, [count, batch])
    best = tf.argmax(score, axis=0, output_type=tf.int32)  # [batch]
    return tf.gather_nd(tf.reshape(z, [count, batch, d]),
                        tf.stack([best, tf.range(batch)], axis=-1))


def infer_each(generator, images, **kwargs):
    """`infer` one image at a time: z [batch, d], row b a function of images[b] alone.

    Every row runs the same ops on the same shapes whatever the batch, so a row's z is
    bit for bit the same alone or batched with others (TF Serving concatenates requests).
    `infer` on a whole batch is not: TensorFlow's matmul kernels change with the batch
    size and round differently (~1e-4 for the generator's long inner products), and
    Langevin on a TopK network amplifies such a difference into another linear piece.
    kwargs: those of `infer` (its seed is shared by all rows); images [batch, H, W, 3].
    """
    d = generator.config.latent_dim
    return tf.map_fn(lambda image: infer(generator, image[None], **kwargs)[0],
                     tf.convert_to_tensor(images, tf.float32),
                     fn_output_signature=tf.TensorSpec([d], tf.float32))


def chain_centroids(chains, num, *, min_members=clusters.MIN_MEMBERS, seed=0,
                    iterations=25):
    """k-means centroids [C, d] of the persistent chains [N, d], for starting points that
    hold no single training example's code: each centroid is the mean of at least
    `min_members` chains, C = at most min(num, N // min_members) (`clusters.kmeans`)."""
    return clusters.kmeans(chains, num, min_members=min_members, seed=seed,
                           iterations=iterations)[0]


def central_occluder(images):
    """Observed-pixel mask [N, H, W, 1]: 0 on the central half (rows and columns H/4 to
    3H/4), 1 elsewhere. On the parts grid that hides the four central cells, one in each
    quadrant, whose parts the other three cells of the quadrant's composite imply."""
    n, h, w = np.shape(images)[:3]
    observed = np.ones((n, h, w, 1), np.float32)
    observed[:, h // 4:3 * h // 4, w // 4:3 * w // 4] = 0.0
    return observed


def reconstruct(model, images, *, settings=DEFAULT_SETTINGS, seed=0, observed=None):
    """Infers z [batch, d] for images [batch, H, W, 3] in [-1, 1] with a trained
    `AlternatingBackprop` model: its generator, δ, σ and (if settings.use_bank) chains,
    or with settings.method "amortized" its inference network (`amortized`).

    Raises UserError if "amortized" is asked of a model without an inference network.
    """
    if settings.method not in METHODS:
        raise UserError(f"unknown inference method {settings.method!r}; use one of "
                        f"{', '.join(METHODS)}")
    if settings.method == "amortized" and getattr(model, "encoder", None) is None:
        raise UserError(NO_ENCODER)
    images = tf.convert_to_tensor(images, tf.float32)
    if observed is not None:
        observed = tf.convert_to_tensor(observed, tf.float32)
    return _compiled(model, settings, seed, observed is not None)(images, observed)


@functools.lru_cache(maxsize=16)
def _compiled(model, settings, seed, masked):
    """One XLA function per (model, settings, seed, masked), reused across calls."""
    del masked  # part of the cache key only: None and a mask trace differently
    if settings.method == "amortized":
        return tf.function(lambda images, observed: amortized(
            model.generator, model.encoder, images, steps=settings.amortized_steps,
            step_size=settings.amortized_step_size, sigma=model.langevin.sigma,
            momentum=settings.amortized_momentum, observed=observed,
            bank=model.chains.value if settings.amortized_starts > 1 else None,
            starts=settings.amortized_starts,
            langevin_steps=settings.amortized_langevin_steps,
            langevin_step_size=model.langevin.step_size), jit_compile=True)
    return tf.function(lambda images, observed: infer(
        model.generator, images, steps=settings.steps, step_size=model.langevin.step_size,
        sigma=model.langevin.sigma, restarts=settings.restarts, seed=seed, observed=observed,
        bank=model.chains.value if settings.use_bank else None,
        anneal_sigma=settings.anneal_sigma, anneal_stages=settings.anneal_stages,
        refine_steps=settings.refine_steps,
        refine_step_size=settings.refine_step_size), jit_compile=True)
