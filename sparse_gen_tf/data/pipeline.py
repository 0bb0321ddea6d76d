"""Training data: load a dataset into memory and serve (example id, image) batches.

Every dataset is held as uint8 [N, H, W, 3] in memory with example ids 0..N-1. The ids
index the persistent Langevin chains, so they must stay the same across runs and resumes:
every loader is deterministic (sorted files, fixed seeds, TFDS order).
"""

import dataclasses

from absl import logging
import numpy as np
import tensorflow as tf

from sparse_gen_tf.errors import DataError

DATASETS = ("parts", "celeb_a", "folder")


@dataclasses.dataclass(frozen=True)
class TrainingData:
    """A run's images.

    images: uint8 [N, H, W, 3], the training images (example ids 0..N-1).
    ground_truth: the parts grammar's labels of the training images, or None.
    heldout: uint8 [M, H, W, 3], images of an image dataset set aside by --heldout and
      never trained on ([0, H, W, 3] without it; parts draws its own, `heldout_images`).
    """
    images: np.ndarray
    ground_truth: object = None
    heldout: np.ndarray = None

    @property
    def num_examples(self):
        return len(self.images)


def load(dataset, *, image_size, num_images, data_dir=None, seed=0, heldout=0,
         flip=False, crop=1.0, parts_geometry="default"):
    """Loads `dataset` ("parts", "celeb_a" or "folder") as `TrainingData`.

    parts: the embedded And-Or grammar dataset (no download), seeded by `seed`, at
      `parts_geometry` (`parts.GEOMETRIES`).
    celeb_a: TFDS celeb_a from `data_dir`, the first `num_images` + `heldout`.
    folder: JPEG/PNG files under `data_dir`, the first `num_images` + `heldout` in sorted
      order.
    For the image datasets the last `heldout` of the loaded images are held out, and a
    dataset smaller than asked for is used whole: with fewer than `num_images` +
    `heldout` images the run trains on all but the last `heldout`, and says so.
    flip: image datasets only: append every training image mirrored left to right, as
      an example of its own (ids N..2N-1, each with its own chain); the held-out images
      are not mirrored.
    crop: image datasets only: each image's centred square, as a fraction of its shorter
      side, before resizing (`images.center_crop_and_resize`).
    """
    if dataset == "parts":
        from sparse_gen_tf.data import parts
        if heldout:
            raise DataError("--heldout is for image datasets; --dataset=parts draws fresh "
                            "held-out images, so drop --heldout")
        if flip:
            raise DataError("--flip is for image datasets; a mirrored parts image is not a "
                            "derivation of its grammar, so drop --flip")
        if crop != 1.0:
            raise DataError("--crop is for image datasets; parts images are drawn at "
                            "--image_size, so drop --crop")
        try:
            images, truth = parts.generate_geometry(parts_geometry, num_images,
                                                    image_size=image_size, seed=seed)
        except ValueError as error:
            raise DataError(str(error)) from None
        return TrainingData(images, truth)
    from sparse_gen_tf.data import images as image_files
    if dataset == "celeb_a":
        loaded = image_files.load_celeb_a(data_dir, image_size, num_images + heldout,
                                          crop=crop)
        where = f"CelebA in {data_dir or 'the TFDS data_dir'}"
    elif dataset == "folder":
        if not data_dir:
            raise DataError("--dataset=folder needs --data_dir=PATH, a folder of JPEG or "
                            "PNG images")
        loaded = image_files.load_folder(data_dir, image_size, num_images + heldout, crop=crop)
        where = data_dir
    else:
        raise DataError(f"unknown dataset {dataset!r}; use one of {', '.join(DATASETS)}")
    if len(loaded) <= heldout:
        raise DataError(f"{where} has {len(loaded)} images and --heldout={heldout} would "
                        "leave none to train on; lower --heldout or add images")
    train = loaded[:len(loaded) - heldout]
    if len(loaded) < num_images + heldout:
        logging.warning("--num_images=%d, but %s has only %d images%s; training on all %d "
                        "(config.json records it)", num_images, where, len(loaded),
                        f" and {heldout} are held out" if heldout else "", len(train))
    else:
        logging.info("training on %d images from %s%s", len(train), where,
                     f"; the next {heldout} are held out" if heldout else "")
    heldout_images = loaded[len(train):]
    if flip:
        train = np.concatenate([train, train[:, :, ::-1]])
    return TrainingData(train, heldout=heldout_images)


def load_for(config):
    """`load` with the settings of a TrainConfig."""
    return load(config.dataset, image_size=config.generator.image_size,
                num_images=config.num_images, data_dir=config.data_dir, seed=config.seed,
                heldout=config.heldout, flip=config.flip, crop=config.crop,
                parts_geometry=config.parts_geometry)


# Added to a run's seed for the parts images that held-out evaluation draws: a grammar
# seed of its own, so they are never training images.
HELDOUT_IMAGE_SEED = 10_000


def heldout_images(config, num, data=None):
    """(uint8 images [m, H, W, 3] the run never trained on, parts GroundTruth or None).

    parts: `num` fresh draws of the run's grammar (m = num). Image datasets: the first
    `num` of the --heldout images (m = min(num, --heldout); 0 without --heldout), taken
    from `data` (the run's `TrainingData`) when the caller has loaded it already.
    """
    if config.dataset == "parts":
        from sparse_gen_tf.data import parts
        return parts.generate_geometry(config.parts_geometry, num,
                                       image_size=config.generator.image_size,
                                       seed=config.seed,
                                       image_seed=config.seed + HELDOUT_IMAGE_SEED)
    return (data or load_for(config)).heldout[:num], None


def to_model_range(images):
    """uint8 [..., 3] in [0, 255] -> float32 in [-1, 1], the range of the generator's tanh."""
    return tf.cast(images, tf.float32) / 127.5 - 1.0


def train_dataset(data, batch_size, seed=0, repeat=False):
    """Shuffled batches of (ids int32 [batch], images float32 [batch, H, W, 3] in [-1, 1]).

    One pass is one epoch. The last partial batch is dropped, so that the compiled train
    step always sees the same shape; reshuffling each epoch rotates which ids are dropped.
    repeat: the passes follow one another without end, each shuffled anew, and the
    prefetching runs on across their boundaries; `fit` then takes one iterator for the
    whole run (with steps_per_epoch = N // batch_size) instead of making one per epoch,
    which on the parts data cost about a third of the step's time (docs/speed.md).
    """
    n = data.num_examples
    if n < batch_size:
        raise DataError(f"the dataset has {n} images, fewer than --batch_size={batch_size}; "
                        "lower --batch_size or add images")
    images = tf.constant(data.images)
    # Gathering whole batches from one in-memory tensor is faster than slicing per example
    # and keeps the dataset graph small (the images are captured, not embedded).
    return (tf.data.Dataset.range(n)
            .shuffle(n, seed=seed, reshuffle_each_iteration=True)
            .batch(batch_size, drop_remainder=True)
            .map(lambda ids: (tf.cast(ids, tf.int32),
                              to_model_range(tf.gather(images, ids))),
                 num_parallel_calls=tf.data.AUTOTUNE)
            .repeat(None if repeat else 1)
            .prefetch(tf.data.AUTOTUNE))
