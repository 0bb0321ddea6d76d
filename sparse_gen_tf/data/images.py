"""Training images, decoded up front into one uint8 array.

The paper trains on 5,000 CelebA images (Sec. 3). At that size the whole set fits in memory
([5000, 64, 64, 3] uint8 is 61 MB), so both loaders decode everything before training starts:
a corrupt file is then named in one line at start-up instead of killing a run hours in. The
caller builds the tf.data pipeline from the returned array and assigns example ids 0..N-1.

Both loaders apply the same rule, `center_crop_and_resize`: crop a centred square, a
fraction `crop` of the shorter side (1.0, the largest square, by default), then resize it to
[image_size, image_size]. `--dataset=folder` on CelebA's own `img_align_celeba/` folder
therefore gives the same images as `--dataset=celeb_a`.
"""

import os
import re

from absl import logging
import numpy as np
import tensorflow as tf

from sparse_gen_tf.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")

# File signatures. The extension is only a hint; these bytes decide what a file really is.
_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# Big enough to amortise Python's per-batch overhead, small enough that a corrupt file is
# located by re-decoding at most this many files one by one.
_BATCH_SIZE = 64


# The 64x64 CelebA literature (DCGAN and its successors) crops the centred 108 x 108 box
# of the 178 x 218 aligned image: the face from brows to chin, without hair and background.
CELEBA_FACE_CROP = 108 / 178


def center_crop_and_resize(image: tf.Tensor, image_size: int, crop: float = 1.0) -> tf.Tensor:
    """Crops a centred square of an image and resizes it.

    The square's side is `crop` times the image's shorter side, so the box scales with the
    image: 0.607 (`CELEBA_FACE_CROP`) is the 108-px face box on a 178-px-wide aligned CelebA
    image and the 54-px one on an 89-px-wide half-size copy.

    Resizing is bilinear with antialiasing, so downscaling (CelebA's 178 px to 64 px) averages
    over the whole footprint of each output pixel instead of aliasing, and upscaling a small
    image is smooth rather than blocky.

    Args:
        image: uint8 tensor [height, width, 3], any height and width.
        image_size: output side length in pixels.
        crop: side of the centred square as a fraction of the shorter side, in (0, 1].

    Returns:
        uint8 tensor [image_size, image_size, 3].
    """
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    side = tf.minimum(height, width)
    if crop != 1.0:
        side = tf.maximum(1, tf.cast(tf.round(crop * tf.cast(side, tf.float32)), tf.int32))
    # Odd leftovers go to the bottom/right, as in tf.image.central_crop.
    square = tf.image.crop_to_bounding_box(
        image, (height - side) // 2, (width - side) // 2, side, side
    )
    resized = tf.image.resize(square, [image_size, image_size], method="bilinear", antialias=True)
    # Round rather than truncate, so a solid colour keeps its exact value.
    return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)


def load_folder(path: str, image_size: int, num_images: int | None = None,
                crop: float = 1.0) -> np.ndarray:
    """Loads the JPEG and PNG images under a folder.

    Files are found recursively by extension (.jpg, .jpeg, .png, any case) and taken in sorted
    path order, so the same folder always gives the same images in the same order. Hidden files
    and folders (names starting with ".") are skipped: macOS leaves "._name.jpg" metadata files
    next to images when it copies them. Grayscale images are repeated to 3 channels, the alpha
    channel of RGBA images is dropped, and every image goes through `center_crop_and_resize`.
    If the folder holds fewer than `num_images` images, all of them are used (the caller,
    `pipeline.load`, says so).

    Args:
        path: local folder, e.g. CelebA's `img_align_celeba/`.
        image_size: side length of the returned images in pixels.
        num_images: how many images to take, in sorted order; None takes all of them.
        crop: the centred square's side as a fraction of the shorter side
            (`center_crop_and_resize`).

    Returns:
        uint8 array [N, image_size, image_size, 3] with N = min(num_images, files found).

    Raises:
        DataError: the folder is missing, is a file or holds no images, or an image file is
            corrupt (the message names the file).
    """
    _check_sizes(image_size, num_images)
    paths = image_paths(path, num_images)
    # Checking signatures first is cheap and catches the common cases (a text or HTML file
    # saved as .jpg, an empty file) before any decoding starts.
    for file_path in paths:
        _check_signature(file_path)

    def decode(file_path):
        data = tf.io.read_file(file_path)
        # channels=3 turns grayscale into RGB and drops alpha; expand_animations=False keeps
        # the result rank 3, which crop_to_bounding_box needs.
        image = tf.io.decode_image(data, channels=3, expand_animations=False)
        return center_crop_and_resize(image, image_size, crop)

    images = tf.data.Dataset.from_tensor_slices(paths).map(
        decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    result = np.empty([len(paths), image_size, image_size, 3], np.uint8)
    done = 0
    try:
        for batch in _numpy_batches(images):
            result[done:done + len(batch)] = batch
            done += len(batch)
    except tf.errors.OpError as error:
        # A tf.data error does not say which element failed. Batches arrive in order, so the
        # culprit is in the batch that failed: decode from there one file at a time to name it.
        for file_path in paths[done:]:
            try:
                decode(tf.constant(file_path))
            except tf.errors.OpError as file_error:
                raise DataError(
                    f"corrupt image file {file_path}: {_reason(file_error)}; "
                    "remove or replace it"
                ) from file_error
        raise DataError(
            f"could not read the images in {path}: {_reason(error)}; "
            "check that the folder is readable and rerun"
        ) from error
    logging.info("loaded %d images of %d px from %s", done, image_size, path)
    return result


def image_paths(path: str, num_images: int | None = None) -> list:
    """The image files that `load_folder(path, ..., num_images)` loads, in its order.

    Row i of `load_folder`'s array is decoded from path i, so the files' names tie a
    run's images to per-file data such as CelebA's attribute labels (`attributes.py`).

    Returns:
        list of up to `num_images` paths (all of them for None), in sorted order.

    Raises:
        DataError: the folder is missing, is a file or holds no images.
    """
    paths = _find_image_files(path)
    logging.info("found %d image files in %s", len(paths), path)
    return paths[:num_images]


def load_celeb_a(
    data_dir: str | None, image_size: int, num_images: int, split: str = "train",
    crop: float = 1.0,
) -> np.ndarray:
    """Loads CelebA images from a TFDS data directory.

    The aligned CelebA images are 218 x 178 (height x width); the largest centred square is
    the middle 178 x 178, which keeps the whole face with some hair and background;
    `crop=CELEBA_FACE_CROP` takes the literature's centred 108 x 108 face box instead. Both
    match `load_folder` on `img_align_celeba/` with the same `crop`. Nothing is downloaded:
    without network access TFDS retries a download for minutes, so a missing dataset fails
    at once instead. If the split holds fewer than `num_images` images, all of them are
    used (`pipeline.load` says so).

    Args:
        data_dir: TFDS data directory that holds a prepared `celeb_a`; None means the TFDS
            default ($TFDS_DATA_DIR or ~/tensorflow_datasets).
        image_size: side length of the returned images in pixels.
        num_images: how many images to take from the start of the split (file order).
        split: TFDS split: "train", "validation", "test", or a slice such as "train[10%:]".
        crop: the centred square's side as a fraction of the shorter side.

    Returns:
        uint8 array [N, image_size, image_size, 3] with N = min(num_images, split size).

    Raises:
        DataError: CelebA is not prepared in data_dir, the split is unknown, or its files are
            unreadable.
    """
    _check_sizes(image_size, num_images)
    examples, shown_dir, rebuild = celeb_a_examples(data_dir, split)
    images = examples.take(num_images).map(
        lambda example: center_crop_and_resize(example["image"], image_size, crop),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    try:
        batches = list(_numpy_batches(images))
    except tf.errors.OpError as error:
        raise DataError(
            f"CelebA files in {shown_dir} are unreadable: {_reason(error)}; "
            f"delete {os.path.join(shown_dir, 'celeb_a')} and {rebuild}"
        ) from error
    if not batches:
        raise DataError(f"CelebA split {split!r} in {shown_dir} is empty; use split 'train'")
    result = np.concatenate(batches)
    logging.info("loaded %d CelebA images of %d px from %s", len(result), image_size, shown_dir)
    return result


def celeb_a_examples(data_dir: str | None, split: str = "train"):
    """TFDS celeb_a's examples in file order, without downloading anything.

    Each example is a dict with "image" (uint8 [218, 178, 3]), "attributes" (CelebA's 40
    labels, name -> bool) and "landmarks". Returns (the tf.data.Dataset of examples, the
    data directory as shown in messages, the sentence that says how to prepare it).

    Raises:
        DataError: CelebA is not prepared in data_dir, or the split is unknown.
    """
    # Imported here so that `--dataset=folder` never pays for importing TFDS.
    import tensorflow_datasets as tfds

    shown_dir = data_dir or tfds.core.constants.DATA_DIR
    rebuild = (
        f"run `tfds build celeb_a --data_dir={shown_dir}` on a machine with network access "
        "(or place CelebA's manual download files there), or use "
        "--dataset=folder --data_dir=path/to/img_align_celeba"
    )
    try:
        examples = tfds.load(
            "celeb_a", split=split, data_dir=data_dir, download=False, shuffle_files=False
        )
    except AssertionError as error:
        # TFDS signals "not prepared in data_dir" with an AssertionError.
        raise DataError(f"CelebA was not found in {shown_dir}; {rebuild}") from error
    except ValueError as error:
        raise DataError(
            f"cannot read CelebA split {split!r}: {_reason(error)}; "
            "use split 'train', 'validation' or 'test'"
        ) from error
    return examples, shown_dir, rebuild


def _numpy_batches(images):
    """Yields uint8 arrays [<= _BATCH_SIZE, size, size, 3] from a dataset of single images."""
    for batch in images.batch(_BATCH_SIZE).prefetch(1):
        yield batch.numpy()


def _check_sizes(image_size, num_images):
    """Rejects sizes that would otherwise fail deep inside TensorFlow with a cryptic error."""
    if not isinstance(image_size, int) or image_size < 1:
        raise DataError(f"image size must be a positive integer, got {image_size!r}; pass e.g. 64")
    if num_images is not None and (not isinstance(num_images, int) or num_images < 1):
        raise DataError(
            f"number of images must be a positive integer, got {num_images!r}; pass e.g. 5000"
        )


def _find_image_files(path):
    """Returns the sorted paths of the non-hidden JPEG/PNG files under `path`, recursively."""
    if not os.path.exists(path):
        raise DataError(
            f"image folder {path} does not exist; pass --data_dir=path/to/images "
            "(a folder of .jpg/.png files)"
        )
    if not os.path.isdir(path):
        raise DataError(
            f"{path} is a file, not a folder; pass --data_dir=the folder that holds the images"
        )
    paths = []
    for folder, subfolders, names in os.walk(path):
        # Pruning in place stops os.walk from descending into hidden folders.
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        paths.extend(
            os.path.join(folder, name)
            for name in names
            if name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")
        )
    if not paths:
        raise DataError(
            f"image folder {path} is empty: no .jpg, .jpeg or .png files (any case) in it or "
            "its subfolders; add images or point --data_dir at another folder"
        )
    return sorted(paths)


def _check_signature(file_path):
    """Raises DataError unless the file starts with a JPEG or PNG signature."""
    try:
        with open(file_path, "rb") as file:
            head = file.read(len(_PNG_MAGIC))
    except OSError as error:
        raise DataError(
            f"cannot read image file {file_path}: {error.strerror}; check its permissions"
        ) from error
    if not head:
        reason = "the file is empty"
    elif head.startswith(_JPEG_MAGIC) or head.startswith(_PNG_MAGIC):
        return
    else:
        reason = f"not a JPEG or PNG file (starts with {head!r})"
    raise DataError(f"corrupt image file {file_path}: {reason}; remove or replace it")


def _reason(error):
    """The first line of an error's message, without TensorFlow's op-location decorations."""
    message = getattr(error, "message", None) or str(error) or type(error).__name__
    message = re.sub(r"\{\{[^}]*\}\}", "", message)  # "{{function_node __wrapped__...}}"
    message = re.sub(r"\s*\[Op:\w+\]( name:.*)?", "", message)  # "[Op:DecodeImage] name: "
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return lines[0].rstrip(".") if lines else type(error).__name__
