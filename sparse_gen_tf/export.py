"""SavedModel export for TF Serving: every served image comes with its explanation.

An export is a directory E/<version>/ in TF Serving's layout, written by
`keras.export.ExportArchive`, with three signatures. Images are float32 in [0, 1], batch
sizes are dynamic, and sparse layer i counts from 1 at the top:

    serving_default  z float32 [batch, d]              -> image, mask_i, activation_i
    reconstruct      image float32 [batch, H, W, 3]    -> z, reconstruction, mask_i,
                                                          activation_i
    sample           seed int64 [batch]                -> image, z, mask_i, activation_i

mask_i [batch, h_i, w_i, c_i] is 1 where unit (h, w, c) of feature map i survived both
TopK and ReLU (mask_T * mask_R, Eq. 2) and activation_i = mask_i * fm^i holds the values
that survived: the parse of §2.1-2.2. Every output row depends on its own input row only,
bit for bit (`reconstruct` infers one image at a time, `inference.infer_each`), so TF
Serving's server-side batching, which concatenates requests along dimension 0, cannot
change an answer. The graph holds standard TensorFlow ops only, so the export loads with
TensorFlow alone. A SignatureDef has no description field: what each signature does, and
the Langevin settings baked into `reconstruct`, are written to
`assets.extra/signatures.json` inside the version directory.

What the file holds: the generator's weights, and the starting points of `reconstruct`.
By default those are k-means centroids of the training chains, each the mean of at least
`MIN_MEMBERS` chains, so no training example's code is in the export; the full bank of
chains, one row per training image, goes in only with `training_codes=True`
(--export_training_codes), since g(chain) reproduces its training image.
"""

import dataclasses
import json
import os
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf

from sparse_gen_tf import inference, run
from sparse_gen_tf.errors import UserError

SIGNATURES = ("serving_default", "reconstruct", "sample")
INFO_FILE = os.path.join("assets.extra", "signatures.json")
# Seeds the N(0, I) restarts and the Langevin noise of `reconstruct`: the same for every
# row, so that a row's answer is a function of its image alone.
RECONSTRUCT_SEED = (0, 0)
# A default export's starting points are means of at least this many training chains.
MIN_MEMBERS = 8


def to_unit_range(images):
    """[-1, 1] (the model's range) -> [0, 1] (the served range); any shape."""
    return (images + 1.0) * 0.5


def from_unit_range(images):
    """[0, 1] -> [-1, 1]; any shape."""
    return images * 2.0 - 1.0


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
    """How the `reconstruct` signature infers z: `inference.infer` with these settings,
    run one image at a time (`inference.infer_each`); δ and σ are the trained model's.

    steps, restarts: Langevin steps per chain and chains per image (best log joint wins).
    centroids: k-means centroids of the training chains to start from (the best
      `restarts` of them by log joint; the rest of the restarts are N(0, I) draws).
      0 starts from N(0, I) only.
    training_codes: start from the training chains themselves, one per training image,
      as `inference.infer` does; this puts every training example's code in the file.
    """
    steps: int = inference.DEFAULT_SETTINGS.steps
    restarts: int = inference.DEFAULT_SETTINGS.restarts
    centroids: int = 64
    training_codes: bool = False

    def bank(self, chains):
        """The starting points [M, d] stored in the export, or None, for chains [N, d]."""
        if chains is None or (not self.training_codes and not self.centroids):
            return None
        if self.training_codes:
            return np.asarray(chains, np.float32)
        bank = inference.chain_centroids(chains, self.centroids, min_members=MIN_MEMBERS)
        return bank if len(bank) else None


def infer_latent(generator, images, *, settings, step_size, sigma, bank):
    """The served inference of z for images [batch, H, W, 3] in [-1, 1]: [batch, d].

    `inference.infer` (restarts from the best bank entries and N(0, I), Langevin, the
    chain with the best log joint) on each image alone, with a fixed seed, so a row's z
    depends on its image only, bit for bit, whatever else TF Serving batches with it.
    """
    return inference.infer_each(generator, images, steps=settings.steps,
                                step_size=step_size, sigma=sigma,
                                restarts=settings.restarts, seed=RECONSTRUCT_SEED,
                                bank=bank)


def latent_from_seeds(seeds, latent_dim):
    """z [batch, latent_dim] ~ N(0, I); row i is drawn from the stateless seed (seeds[i], 0).

    One seed per row (rather than one seed for the batch) keeps a row's z independent of
    the rows TF Serving batches it with.
    """
    seeds = tf.cast(seeds, tf.int64)
    return tf.map_fn(
        lambda s: tf.random.stateless_normal([latent_dim], tf.stack([s, tf.zeros_like(s)])),
        seeds, fn_output_signature=tf.float32)


def build_archive(generator, *, settings, step_size, sigma, bank=None):
    """A `keras.export.ExportArchive` of generator with the three signatures (module doc).

    settings: `ReconstructSettings`; step_size (δ), sigma (σ): the Langevin settings of
    `reconstruct`, fixed in its graph. bank: optional [M, d] starting points of
    `reconstruct` (`ReconstructSettings.bank`), stored in the graph.
    """
    cfg = generator.config
    d, size = cfg.latent_dim, cfg.image_size

    # ensure_shape turns a wrongly shaped request into one clear error ("Shape of tensor
    # image [1,16,16,3] is not compatible with expected shape [?,32,32,3]"): a called
    # signature, unlike a called tf.function, does not check shapes itself.
    def generate(z):
        parse = generator.parse(tf.ensure_shape(z, [None, d]))
        return {"image": to_unit_range(parse["image"]), **explanation(parse)}

    def reconstruct(image):
        image = tf.ensure_shape(image, [None, size, size, 3])
        z = infer_latent(generator, from_unit_range(image), settings=settings,
                         step_size=step_size, sigma=sigma, bank=bank)
        parse = generator.parse(z)
        return {"z": z, "reconstruction": to_unit_range(parse["image"]),
                **explanation(parse)}

    def sample(seed):
        z = latent_from_seeds(tf.ensure_shape(seed, [None]), d)
        return {"z": z, **generate(z)}

    # The served graph runs without XLA (TF Serving), where TensorFlow's own TopK kernel is
    # the faster threshold (layers.kth_largest).
    for topk in generator.topks:
        topk.bisection = False
    archive = keras.export.ExportArchive()
    archive.track(generator)
    # The argument names (z, image, seed) become the signatures' input names.
    archive.add_endpoint("serving_default", generate,
                         [tf.TensorSpec([None, d], tf.float32, name="z")])
    archive.add_endpoint("reconstruct", reconstruct,
                         [tf.TensorSpec([None, size, size, 3], tf.float32, name="image")])
    archive.add_endpoint("sample", sample, [tf.TensorSpec([None], tf.int64, name="seed")])
    return archive


def describe(generator, *, settings, step_size, sigma, bank=None, source=None):
    """The JSON-able description written to assets.extra/signatures.json."""
    cfg = generator.config
    size, d = cfg.image_size, cfg.latent_dim
    explained = {}
    for i, (h, w, c) in enumerate(cfg.feature_map_shapes(), 1):
        explained[f"mask_{i}"] = [-1, h, w, c]
        explained[f"activation_{i}"] = [-1, h, w, c]
    image = [-1, size, size, 3]
    if bank is None:
        start = f"{settings.restarts} draws from N(0, I)"
    else:
        what = ("training chains (one per training image)" if settings.training_codes else
                f"k-means centroids of the training chains (each the mean of at least "
                f"{MIN_MEMBERS} chains)")
        start = (f"the {min(settings.restarts, len(bank))} (of {len(bank)}) {what} with "
                 "the highest log joint (Eq. 11), then N(0, I) draws for the other restarts")
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
                "doc": (f"Infers z for each image: {settings.restarts} Langevin chains "
                        f"(Eq. 10) of {settings.steps} steps, started from `start`, and "
                        "the one with the highest log joint (Eq. 11) wins; returns g(z) "
                        "with its parse. Deterministic (fixed noise seed); each image is "
                        "inferred alone, so a row's answer does not depend on the other "
                        "rows."),
                "langevin": {"steps": settings.steps, "restarts": settings.restarts,
                             "step_size": step_size, "sigma": sigma, "noise": True,
                             "seed": list(RECONSTRUCT_SEED), "start": start,
                             "training_codes": settings.training_codes},
                "inputs": {"image": {"dtype": "float32", "shape": image}},
                "outputs": {"z": [-1, d], "reconstruction": image, **explained}},
            "sample": {
                "doc": ("Draws one z ~ N(0, I) per seed (stateless, seed (seed, 0)) and "
                        "generates its image with its parse; the same seed gives the same "
                        "sample. Send n seeds for n samples."),
                "inputs": {"seed": {"dtype": "int64", "shape": [-1]}},
                "outputs": {"image": image, "z": [-1, d], **explained}},
        },
    }


def existing_versions(export_base):
    """The integer versions already in export_base (TF Serving ignores other names)."""
    if not os.path.isdir(export_base):
        return []
    return sorted(int(name) for name in os.listdir(export_base)
                  if name.isdigit() and os.path.isdir(os.path.join(export_base, name)))


def choose_version(export_base, version=None):
    """Creates export_base if needed; returns the version to write (next one if None).

    Raises UserError if export_base cannot be written or `version` already exists.
    """
    try:
        os.makedirs(export_base, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create --export_base={export_base} ({e.strerror}); "
                        "choose a directory you can write to") from None
    if not os.path.isdir(export_base) or not os.access(export_base, os.W_OK | os.X_OK):
        raise UserError(f"cannot write to --export_base={export_base}; choose a directory "
                        "you can write to")
    versions = existing_versions(export_base)
    if version is None:
        return (versions[-1] + 1) if versions else 1
    if version in versions:
        raise UserError(f"version {version} already exists in {export_base}; exports are "
                        f"never overwritten: omit --version to write version "
                        f"{versions[-1] + 1}")
    return version


def write_version(archive, export_base, version, info):
    """Writes archive and info to export_base/<version> atomically; returns the path.

    The SavedModel is written into a hidden temporary directory inside export_base and
    renamed into place, so TF Serving (which polls export_base) never sees a half-written
    version. POSIX rename refuses a non-empty target, so an existing version is never
    replaced even if another export races this one.
    """
    target = os.path.join(export_base, str(version))
    tmp = tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=export_base)
    try:
        archive.write_out(tmp, verbose=False)
        os.makedirs(os.path.join(tmp, "assets.extra"), exist_ok=True)
        with open(os.path.join(tmp, INFO_FILE), "w") as f:
            json.dump(info, f, indent=2)
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; a server may run as another user
        if os.path.exists(target):
            raise UserError(f"version {version} appeared in {export_base} during the "
                            "export; rerun to write the next version")
        os.rename(tmp, target)
    except OSError as e:
        raise UserError(f"could not write {target} ({e.strerror}); check the space and "
                        "permissions of --export_base") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def export_generator(generator, export_base, *, step_size, sigma,
                     settings=ReconstructSettings(), chains=None, version=None, source=None):
    """Exports generator as the next (or the given) version in export_base; returns its path.

    chains: optional [N, d] persistent chains of the training images, from which
    `settings.bank` makes the starting points of `reconstruct`.
    """
    version = choose_version(export_base, version)
    baked = dict(settings=settings, step_size=float(step_size), sigma=float(sigma),
                 bank=settings.bank(chains))
    archive = build_archive(generator, **baked)
    return write_version(archive, export_base, version,
                         describe(generator, source=source, **baked))


def export_workdir(workdir, export_base, *, settings=ReconstructSettings(), version=None):
    """Exports the latest checkpoint of the training run in workdir; returns the path.

    Raises UserError if workdir holds no run or checkpoint (`run.load_run`), or see
    `choose_version`.
    """
    opened = run.load_run(workdir)
    model = opened.model
    return export_generator(model.generator, export_base, settings=settings,
                            step_size=model.langevin_step_size, sigma=model.sigma,
                            chains=model.chains.numpy(), version=version,
                            source=opened.checkpoint)


def example_requests(export_dir, rows=2):
    """Example TF Serving REST predict bodies that fit the export at export_dir.

    Returns {file name: JSON-able body}: "<signature>.rows.json" (row format,
    "instances") and "<signature>.columns.json" (columnar format, "inputs") for each
    signature. Shapes and dtypes are read from the export's own signatures, so the
    bodies follow the exported config. reconstruct gets one small synthetic picture (a
    disc on a gradient) of the exported size.
    """
    loaded = tf.saved_model.load(export_dir)
    rng = np.random.RandomState(0)
    bodies = {}
    for name in SIGNATURES:
        specs = loaded.signatures[name].structured_input_signature[1]
        inputs = {key: _example_input(key, spec, rows, rng) for key, spec in specs.items()}
        batch = len(next(iter(inputs.values())))
        bodies[f"{name}.rows.json"] = {
            "signature_name": name,
            "instances": [{key: value[i] for key, value in inputs.items()}
                          for i in range(batch)]}
        bodies[f"{name}.columns.json"] = {"signature_name": name, "inputs": inputs}
    return bodies


def _example_input(key, spec, rows, rng):
    """A nested list (JSON) for one named input of spec [None, ...]."""
    if spec.dtype.is_integer:
        return list(range(7, 7 + rows))
    shape = spec.shape.as_list()[1:]
    if key == "image":
        h, w, _ = shape
        y, x = np.mgrid[0:h, 0:w] / max(h - 1, 1)
        disc = ((y - 0.5) ** 2 + (x - 0.5) ** 2 < 0.08).astype(np.float32)
        picture = np.stack([0.2 + 0.7 * disc, 0.1 + 0.3 * x, 0.6 * (1 - disc) * y], -1)
        return np.round(picture[None], 3).tolist()
    return np.round(rng.standard_normal([rows] + shape), 4).tolist()


__all__ = ["SIGNATURES", "build_archive", "example_requests", "explanation",
           "export_generator", "export_workdir", "infer_latent", "ReconstructSettings",
           "latent_from_seeds"]
