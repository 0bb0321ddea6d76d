"""Training data: load a dataset into memory and serve (example id, image) batches.

Every dataset is held as uint8 [N, H, W, 3] in memory with example ids 0..N-1. The ids
index the persistent Langevin chains, so they must stay the same across runs and resumes:
every loader is deterministic (sorted files, fixed seeds, TFDS order).
"""

import dataclasses

import numpy as np
import tensorflow as tf

from sparse_gen_tf.errors import DataError

DATASETS = ("parts", "celeb_a", "folder")


@dataclasses.dataclass(frozen=True)
class TrainingData:
    """images: uint8 [N, H, W, 3]; ground_truth: the parts grammar's labels, or None."""
    images: np.ndarray
    ground_truth: object = None

    @property
    def num_examples(self):
        return len(self.images)


def load(dataset, *, image_size, num_images, data_dir=None, seed=0):
    """Loads `dataset` ("parts", "celeb_a" or "folder") as `TrainingData`.

    parts: the embedded And-Or grammar dataset (no download), seeded by `seed`.
    celeb_a: TFDS celeb_a from `data_dir`, first `num_images`.
    folder: JPEG/PNG files under `data_dir`, first `num_images` in sorted order.
    """
    if dataset == "parts":
        from sparse_gen_tf.data import parts
        images, truth = parts.generate(num_images, image_size=image_size, seed=seed)
        return TrainingData(images, truth)
    if dataset == "celeb_a":
        from sparse_gen_tf.data import images as image_files
        return TrainingData(image_files.load_celeb_a(data_dir, image_size, num_images))
    if dataset == "folder":
        from sparse_gen_tf.data import images as image_files
        if not data_dir:
            raise DataError("--dataset=folder needs --data_dir=PATH, a folder of JPEG or "
                            "PNG images")
        return TrainingData(image_files.load_folder(data_dir, image_size, num_images))
    raise DataError(f"unknown dataset {dataset!r}; use one of {', '.join(DATASETS)}")


def to_model_range(images):
    """uint8 [..., 3] in [0, 255] -> float32 in [-1, 1], the range of the generator's tanh."""
    return tf.cast(images, tf.float32) / 127.5 - 1.0


def train_dataset(data, batch_size, seed=0):
    """Shuffled batches of (ids int32 [batch], images float32 [batch, H, W, 3] in [-1, 1]).

    One pass is one epoch. The last partial batch is dropped, so that the compiled train
    step always sees the same shape; reshuffling each epoch rotates which ids are dropped.
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
            .prefetch(tf.data.AUTOTUNE))
