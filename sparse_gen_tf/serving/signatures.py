"""SavedModel export for TF Serving: every served image comes with its explanation.

An export is a directory E/<version>/ in TF Serving's layout, written by
`keras.export.ExportArchive`, with three signatures. Images are float32 in [0, 1], batch
sizes are dynamic, and sparse layer i counts from 1 at the top:

    serving_default  z float32 [batch, d]              -> image, mask_i, activation_i
    reconstruct      image float32 [batch, H, W, 3]    -> z, reconstruction, mask_i,
                                                          activation_i
    sample           seed int64 [batch]                -> image, mask_i, activation_i
                                                          (and z, with prior normal)

mask_i [batch, h_i, w_i, c_i] is 1 where unit (h, w, c) of feature map i survived both
TopK and ReLU (mask_T * mask_R, Eq. 2) and activation_i = mask_i * fm^i holds the values
that survived: the parse of §2.1-2.2. Every output row depends on its own input row only,
bit for bit, so TF Serving's server-side batching, which concatenates requests along
dimension 0, cannot change an answer: the graph is traced with the generator and the
inference network batch-invariant (`serving_graph`: every product of an example's
activations with a weight matrix is that example's own, `layers.matmul`), so the
batched ops of serving_default and the amortized `reconstruct` compute each row as it
would alone, and a batch costs less per image than single requests; the search of
`reconstruct` infers one image at a time (`inference.infer_each`), and `sample` draws one
row at a time (`each_row`). The graph holds standard TensorFlow ops only, so the export
loads with TensorFlow alone. A SignatureDef has no description field: what each
signature does, and the inference settings baked into `reconstruct`, are written to
`assets.extra/signatures.json` inside the version directory.

`reconstruct` runs one of two inferences (`ReconstructSettings.method`): "amortized", the
run's inference network q(z | Y) (model/encoder.py), then a few noise-free steps of
Eq. (10) (`inference.amortized`); or "search", Langevin chains from several starting
points, the best by Eq. (11) (`inference.infer`).

`sample` draws from the run's prior (`model/prior.py`): with the default, the induced
And-Or grammar, one parse per seed and no z (a parse recombined across the top AND nodes
is the image of no latent vector); with prior normal, z ~ N(0, I) and z is an output.

What the file holds: the generator's weights, the inference network's weights (amortized
`reconstruct`; weights only, model/encoder.py) or the starting points of the search, and
the prior's state. By default the starting points are k-means centroids of the training
chains, and the grammar prior's OR configurations k-means centroids of the top AND nodes'
codes over the training parses, each the mean of at least `MIN_MEMBERS` of them, so no
training example's code is in the export; the full bank of chains, one row per training
image, goes in only with `training_codes=True` (--export_training_codes), since
g(chain) reproduces its training image.
"""

import contextlib
import dataclasses
import functools

import keras
import numpy as np
import tensorflow as tf

from sparse_gen_tf.errors import UserError
from sparse_gen_tf.learning import gradient_path, inference
from sparse_gen_tf.model import clusters
from sparse_gen_tf.model import prior as prior_lib

SIGNATURES = ("serving_default", "reconstruct", "sample")
# How `reconstruct` infers z (`ReconstructSettings.method`).
RECONSTRUCT_METHODS = ("auto", "amortized", "search")
# Seeds the N(0, I) restarts and the Langevin noise of `reconstruct`: the same for every
# row, so that a row's answer is a function of its image alone.
RECONSTRUCT_SEED = (0, 0)
# A default export's starting points are means of at least this many training chains.
MIN_MEMBERS = clusters.MIN_MEMBERS


def to_unit_range(images):
    """[-1, 1] (the model's range) -> [0, 1] (the served range); any shape."""
    return (images + 1.0) * 0.5


def from_unit_range(images):
    """[0, 1] -> [-1, 1]; any shape."""
    return images * 2.0 - 1.0


def checked_images(images, size):
    """images [batch, size, size, 3], refused unless that shape and in the served range.

    A signature does not check the shape of what it is sent, and a 0-255 image would be
    inferred as if it were very bright and answered wrongly without a word: each is
    refused with one InvalidArgumentError naming what is expected, "assertion failed:
    [image must be float32 [batch, 32, 32, 3] ...; got shape] [1 16 16 3]". Non-finite
    values are outside [0, 1] too.
    """
    expected = f"image must be float32 [batch, {size}, {size}, 3]"
    shape = tf.shape(images)
    # Padded, so that an image of another rank compares instead of failing to.
    right_shape = tf.logical_and(
        tf.equal(tf.size(shape), 4),
        tf.reduce_all(tf.equal(tf.pad(shape, [[0, 4]])[1:4], [size, size, 3])))
    check_shape = tf.debugging.Assert(right_shape, [f"{expected}; got shape", shape],
                                      summarize=8)
    with tf.control_dependencies([check_shape]):
        in_range = tf.reduce_all(tf.logical_and(images >= 0.0, images <= 1.0))
        check_range = tf.debugging.Assert(
            in_range, [f"{expected} with values in [0, 1] (8-bit pixels divided by 255); "
                       "got values from", tf.reduce_min(images), "to", tf.reduce_max(images)])
    with tf.control_dependencies([check_range]):
        return tf.ensure_shape(tf.identity(images), [None, size, size, 3])


def explanation(parse):
    """{"mask_i", "activation_i"} for each sparse layer i = 1..n of `Generator.parse`.

    mask_i: 0/1 float32 [batch, h_i, w_i, c_i], TopK mask * ReLU mask.
    activation_i: [batch, h_i, w_i, c_i], the feature map where mask_i is 1, else 0.
    """
    outputs = {}
    layers = zip(parse["topk_masks"], parse["relu_masks"], parse["activations"])
    for i, (mask_t, mask_r, activation) in enumerate(layers, 1):
        outputs[f"mask_{i}"] = mask_t * mask_r
        outputs[f"activation_{i}"] = activation
    return outputs


@dataclasses.dataclass(frozen=True)
class ReconstructSettings:
    """How the `reconstruct` signature infers z; δ and σ are the trained model's.

    method: "amortized", the run's inference network, then amortized_steps noise-free
      steps of δ = amortized_step_size and momentum amortized_momentum
      (`inference.amortized`), all rows at once, from the guess and the
      amortized_starts - 1 best of the `centroids` k-means centroids of the training
      chains (by default none: the guess alone), the best refined start kept;
      "search", `inference.infer` with the fields below, one image at a time
      (`inference.infer_each`); "auto", amortized when the run has an inference
      network, else search (`resolve`).
    steps, restarts: Langevin steps per chain and chains per image (best log joint wins).
    centroids: k-means centroids of the training chains to start from (the best
      `restarts` of them by log joint; the rest of the restarts are N(0, I) draws).
      0 starts from N(0, I) only.
    training_codes: start from the training chains themselves, one per training image,
      as `inference.infer` does; this puts every training example's code in the file.
    refine_steps, refine_step_size: noise-free steps (gradient ascent on Eq. 11, step
      δ_r; None takes the model's δ) on the winning chain, as in `inference.infer`.
    """
    method: str = "auto"
    amortized_steps: int = inference.AMORTIZED_STEPS
    amortized_step_size: float = inference.AMORTIZED_STEP_SIZE
    amortized_momentum: float = inference.AMORTIZED_MOMENTUM
    amortized_starts: int = inference.AMORTIZED_STARTS
    amortized_langevin_steps: int = inference.AMORTIZED_LANGEVIN_STEPS
    steps: int = inference.DEFAULT_SETTINGS.steps
    restarts: int = inference.DEFAULT_SETTINGS.restarts
    centroids: int = 64
    training_codes: bool = False
    refine_steps: int = inference.DEFAULT_SETTINGS.refine_steps
    refine_step_size: float = inference.DEFAULT_SETTINGS.refine_step_size

    def resolve(self, encoder):
        """These settings for a run whose inference network is encoder (None: it has
        none), with method "auto" made "amortized" or "search". Raises UserError for
        "amortized" without a network, or an unknown method."""
        if self.method not in RECONSTRUCT_METHODS:
            raise UserError(f"unknown reconstruct method {self.method!r}; use one of "
                            f"{', '.join(RECONSTRUCT_METHODS)}")
        if self.method == "amortized" and encoder is None:
            raise UserError(inference.NO_ENCODER.replace("use the search",
                                                         "export with --reconstruct=search"))
        if self.method != "auto":
            return self
        return dataclasses.replace(self, method="search" if encoder is None else "amortized")

    def bank(self, chains):
        """The starting points [M, d] stored in the export, or None, for chains [N, d]
        (for the amortized inference only with amortized_starts > 1: its starts beside
        the network's guess)."""
        if self.method == "amortized" and self.amortized_starts <= 1:
            return None
        if chains is None or (not self.training_codes and not self.centroids):
            return None
        if self.training_codes:
            return np.asarray(chains, np.float32)
        bank = inference.chain_centroids(chains, self.centroids, min_members=MIN_MEMBERS)
        return bank if len(bank) else None


@contextlib.contextmanager
def serving_graph(generator, encoder=None):
    """The generator (and inference network) as the served graph runs them, while it is
    traced; their settings are restored after.

    Batch-invariant (`Generator.batch_invariant`, `Encoder.batch_invariant`): TensorFlow's
    matmul kernels round differently at different batch sizes (the FC layer's output
    differed in the last bit between a batch of 2 and of 4), which would let TF Serving's
    batching change an answer; with every example's products its own, a batch runs as
    one set of ops and each row still gets the bits it gets alone. The Langevin gradient
    takes the plain dense path with TensorFlow's own top_k (`gradient_path.PLAIN`,
    whatever path training chose): TF Serving has no XLA and none of the sparse kernels.
    """
    saved = (generator.batch_invariant,
             None if encoder is None else encoder.batch_invariant)
    generator.batch_invariant = True
    if encoder is not None:
        encoder.batch_invariant = True
    try:
        with gradient_path.plain(generator):
            yield
    finally:
        generator.batch_invariant = saved[0]
        if encoder is not None:
            encoder.batch_invariant = saved[1]


def each_row(fn, inputs, shapes):
    """fn applied to each row of inputs alone: {name: [batch, *shapes[name]]} float32.

    fn maps a batch of one row, [1, ...], to {name: [1, *shapes[name]]}. For work not
    shown batch-invariant (the prior's draws of `sample`): one row at a time, every row
    runs the same ops on the same shapes, whatever else is in the request, at the price
    of one pass of the ops per row.
    """
    return tf.map_fn(lambda row: {k: v[0] for k, v in fn(row[None]).items()}, inputs,
                     fn_output_signature={k: tf.TensorSpec(v, tf.float32)
                                          for k, v in shapes.items()})


def infer_latent(generator, images, *, settings, step_size, sigma, bank, encoder=None):
    """The served inference of z for images [batch, H, W, 3] in [-1, 1]: [batch, d].

    Amortized (`settings.resolve(encoder)`): the network's guess, then noise-free steps
    (`inference.amortized`), on the whole batch; in the served graph (`serving_graph`)
    each row's products are its own. Search: `inference.infer` (restarts from the best
    bank entries and N(0, I), Langevin, the chain with the best log joint) on each image
    alone, with a fixed seed. Either way a row's z depends on its image only, bit for
    bit, whatever else TF Serving batches with it.
    """
    settings = settings.resolve(encoder)
    if settings.method == "amortized":
        return inference.amortized(generator, encoder, images,
                                   steps=settings.amortized_steps,
                                   step_size=settings.amortized_step_size, sigma=sigma,
                                   momentum=settings.amortized_momentum,
                                   bank=bank, starts=settings.amortized_starts,
                                   langevin_steps=settings.amortized_langevin_steps,
                                   langevin_step_size=step_size)
    return inference.infer_each(generator, images, steps=settings.steps,
                                step_size=step_size, sigma=sigma,
                                restarts=settings.restarts, seed=RECONSTRUCT_SEED,
                                bank=bank, refine_steps=settings.refine_steps,
                                refine_step_size=settings.refine_step_size)


def build_archive(generator, *, settings, step_size, sigma, bank=None, prior=None,
                  encoder=None):
    """A `keras.export.ExportArchive` of generator with the three signatures (module doc).

    settings: `ReconstructSettings`; step_size (δ), sigma (σ): the Langevin settings of
    `reconstruct`, fixed in its graph. bank: optional [M, d] starting points of
    `reconstruct`'s search (`ReconstructSettings.bank`), stored in the graph. prior: what
    `sample` draws from (`model.prior`, fitted), N(0, I) if None; its state goes in the
    file. encoder: the run's inference network (`model.encoder`) or None; its weights go
    in the file when `reconstruct` is amortized. The signatures are traced in
    `serving_graph`, whenever the archive traces them.
    """
    settings = settings.resolve(encoder)
    if settings.method != "amortized":
        encoder = None  # not in the graph, so not in the file
    cfg = generator.config
    prior = prior or prior_lib.NormalPrior(cfg)
    d, size = cfg.latent_dim, cfg.image_size

    # ensure_shape turns a wrongly shaped request into one clear error ("Shape of tensor
    # z [2,5] is not compatible with expected shape [?,4]"): a called signature, unlike a
    # called tf.function, does not check shapes itself. Images are checked for their
    # range as well (`checked_images`).
    explained = {}
    for i, shape in enumerate(cfg.feature_map_shapes(), 1):
        explained[f"mask_{i}"] = explained[f"activation_{i}"] = shape
    image_shape, latent_shape = (size, size, 3), (d,)

    def generate(z):
        parse = generator.parse(tf.ensure_shape(z, [None, d]))
        return {"image": to_unit_range(parse["image"]), **explanation(parse)}

    def reconstruct(image):
        image = checked_images(image, size)
        z = infer_latent(generator, from_unit_range(image), settings=settings,
                         step_size=step_size, sigma=sigma, bank=bank, encoder=encoder)
        parse = generator.parse(z)
        return {"z": z, "reconstruction": to_unit_range(parse["image"]),
                **explanation(parse)}

    def sample(seed):
        def one(seed):
            parse = prior.sample(generator, seed)
            latent = {"z": parse["z"]} if prior.has_latent else {}
            return {**latent, "image": to_unit_range(parse["image"]), **explanation(parse)}
        latent = {"z": latent_shape} if prior.has_latent else {}
        return each_row(one, tf.ensure_shape(seed, [None]),
                        {**latent, "image": image_shape, **explained})

    archive = keras.export.ExportArchive()
    archive.track(generator)
    archive.track(prior)
    if encoder is not None:
        archive.track(encoder)
    # The argument names (z, image, seed) become the signatures' input names.
    endpoints = [("serving_default", generate, tf.TensorSpec([None, d], tf.float32, name="z")),
                 ("reconstruct", reconstruct,
                  tf.TensorSpec([None, size, size, 3], tf.float32, name="image")),
                 ("sample", sample, tf.TensorSpec([None], tf.int64, name="seed"))]
    for name, fn, spec in endpoints:
        archive.add_endpoint(name, _in_serving_graph(generator, encoder, fn), [spec])
    return archive


def _in_serving_graph(generator, encoder, fn):
    """fn, run inside `serving_graph(generator, encoder)` whenever it is traced: the
    archive traces its endpoints when it writes them, in TensorFlow's save context, so the
    settings must hold at that moment, not only while the archive is built."""
    @functools.wraps(fn)
    def traced(*args):
        with serving_graph(generator, encoder):
            return fn(*args)
    return traced


def describe(generator, *, settings, step_size, sigma, bank=None, prior=None, source=None,
             encoder=None):
    """The JSON-able description written to assets.extra/signatures.json."""
    settings = settings.resolve(encoder)
    cfg = generator.config
    prior = prior or prior_lib.NormalPrior(cfg)
    sample_outputs = {"image": [-1, cfg.image_size, cfg.image_size, 3],
                      **({"z": [-1, cfg.latent_dim]} if prior.has_latent else {})}
    size, d = cfg.image_size, cfg.latent_dim
    explained = {}
    for i, (h, w, c) in enumerate(cfg.feature_map_shapes(), 1):
        explained[f"mask_{i}"] = [-1, h, w, c]
        explained[f"activation_{i}"] = [-1, h, w, c]
    image = [-1, size, size, 3]
    if settings.method == "amortized":
        # `inference.amortized` is `infer` from the network's guess, with one chain, no
        # Langevin steps and the refinement: recorded in the same fields.
        starts = 1 if bank is None else 1 + min(settings.amortized_starts - 1, len(bank))
        start = ("the inference network's guess E(Y) "
                 f"({'-'.join(map(str, encoder.config.channels))} conv channels)")
        if starts > 1:
            start += (f" and the {starts - 1} (of {len(bank)}) k-means centroids of the "
                      f"training chains (each the mean of at least {MIN_MEMBERS} chains) "
                      "with the highest log joint (Eq. 11)")
        langevin = {"steps": settings.amortized_langevin_steps, "restarts": starts,
                    "step_size": step_size, "sigma": sigma,
                    "noise": settings.amortized_langevin_steps > 0, "start": start,
                    "training_codes": False, "refine_steps": settings.amortized_steps,
                    "refine_step_size": settings.amortized_step_size,
                    "refine_momentum": settings.amortized_momentum}
        doc = ("Infers z for each image: the inference network q(z | Y) guesses it in one "
               "pass"
               + (f", {settings.amortized_langevin_steps} Langevin steps (Eq. 10, δ = "
                  f"{step_size}, a fixed noise draw per start)"
                  if settings.amortized_langevin_steps else "") +
               f", then {settings.amortized_steps} noise-free steps of Eq. (10) "
               f"(gradient ascent on the log joint, Eq. 11, δ = "
               f"{settings.amortized_step_size}"
               + (f", heavy-ball momentum β = {settings.amortized_momentum}"
                  if settings.amortized_momentum else "") + ") refine it"
               + (f" and {starts - 1} other starts, keeping the one of highest log joint"
                  if starts > 1 else "") +
               "; returns g(z) with its parse. "
               "Deterministic; every row's products are its own, so a row's answer does "
               "not depend on the other rows, and a batch is answered at once.")
    else:
        if bank is None:
            start = f"{settings.restarts} draws from N(0, I)"
        else:
            what = ("training chains (one per training image)" if settings.training_codes
                    else f"k-means centroids of the training chains (each the mean of at "
                    f"least {MIN_MEMBERS} chains)")
            start = (f"the {min(settings.restarts, len(bank))} (of {len(bank)}) {what} "
                     "with the highest log joint (Eq. 11), then N(0, I) draws for the "
                     "other restarts")
        langevin = {"steps": settings.steps, "restarts": settings.restarts,
                    "step_size": step_size, "sigma": sigma, "noise": True,
                    "seed": list(RECONSTRUCT_SEED), "start": start,
                    "training_codes": settings.training_codes,
                    "refine_steps": settings.refine_steps,
                    "refine_step_size": (step_size if settings.refine_step_size is None
                                         else settings.refine_step_size)}
        doc = (f"Infers z for each image: {settings.restarts} Langevin chains (Eq. 10) of "
               f"{settings.steps} steps, started from `start`, and the one with the highest "
               "log joint (Eq. 11) wins"
               + (f", then {settings.refine_steps} noise-free steps of gradient ascent on "
                  "Eq. 11 refine it" if settings.refine_steps else "")
               + "; returns g(z) with its parse. Deterministic (fixed noise seed); each "
               "image is inferred alone, so a row's answer does not depend on the other "
               "rows.")
    return {
        "source": source,
        "generator_config": dataclasses.asdict(cfg),
        "images": "float32 in [0, 1], [batch, height, width, RGB]",
        "explanation": ("mask_i: 1 where unit (h, w, c) of sparse layer i (1 = top) "
                        "survived TopK and ReLU, else 0; activation_i: its value there, "
                        f"0 elsewhere; at most K_i = {list(cfg.topk)} ones per example"),
        "signatures": {
            "serving_default": {
                "doc": "Generates the image of each latent vector z, with its parse.",
                "inputs": {"z": {"dtype": "float32", "shape": [-1, d]}},
                "outputs": {"image": image, **explained}},
            "reconstruct": {
                "doc": doc,
                "method": settings.method,
                "langevin": langevin,
                "inputs": {"image": {"dtype": "float32", "shape": image}},
                "outputs": {"z": [-1, d], "reconstruction": image, **explained}},
            "sample": {
                "doc": (f"Draws {prior.describe()}. Returns the image with its parse; "
                        "the same seed gives the same sample, whatever else is in the "
                        "batch. Send n seeds for n samples."),
                "prior": prior.kind,
                "inputs": {"seed": {"dtype": "int64", "shape": [-1]}},
                "outputs": {**sample_outputs, **explained}},
        },
    }
