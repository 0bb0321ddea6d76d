"""Binary attribute labels of a run's images, from CelebA's `list_attr_celeba.txt`.

The file's format (CelebA's own):

    202599                                    the number of images
    5_o_Clock_Shadow Arched_Eyebrows ...      the attribute names, one word each
    000001.jpg -1  1  1 -1 ...                a file name, then 1 (present) or -1 (absent)

`read_attributes` reads it into an `AttributeTable`; `labels_for_run` gives the labels of
a run's training and held-out images in the order the run loads them (`pipeline.load`):
for --dataset=folder each image is matched to its file's line by the file's base name
(`images.image_paths`), for --dataset=celeb_a they are the `attributes` TFDS stores with
each example (TFDS keeps no file names, so no file is needed or read).
"""

import dataclasses
import os
import typing

from absl import logging
import numpy as np
import tensorflow as tf

from sparse_gen_tf.data import images as image_files
from sparse_gen_tf.errors import DataError, UserError

_FORMAT = ("CelebA's list_attr_celeba.txt format: a count line, a line of attribute "
           "names, then 'filename v1 ... vN' lines of 1 or -1")


@dataclasses.dataclass(frozen=True)
class AttributeTable:
    """The labels of an attribute file.

    names: the A attribute names, in the file's order.
    files: the file names of the R rows, e.g. "000001.jpg".
    labels: bool [R, A], True where the row's value is 1.
    """
    names: tuple
    files: tuple
    labels: np.ndarray

    def rows_for(self, paths, source="the attribute file"):
        """bool [len(paths), A]: the labels of image files, matched by base name.

        A file whose base name is not in the table is matched by its name without the
        extension ("000001.png" finds "000001.jpg"), for a folder converted to another
        format. Raises DataError naming the first image that has no line.
        """
        index = {name: i for i, name in enumerate(self.files)}
        stems = {}
        for i, name in enumerate(self.files):
            stems.setdefault(os.path.splitext(name)[0], []).append(i)
        rows, missing = [], []
        for path in paths:
            base = os.path.basename(path)
            if base in index:
                rows.append(index[base])
            elif len(stems.get(os.path.splitext(base)[0], ())) == 1:
                rows.append(stems[os.path.splitext(base)[0]][0])
            else:
                missing.append(path)
        if missing:
            raise DataError(
                f"image {missing[0]} has no line in {source} ({len(missing)} of "
                f"{len(paths)} images have none); pass the attribute file of this "
                "folder's images")
        return self.labels[np.asarray(rows, np.int64)].reshape(len(paths), len(self.names))


class RunLabels(typing.NamedTuple):
    """Attribute labels of a run's images.

    names: the A attribute names.
    train: bool [N, A], row i the label of training image i (`TrainingData.images`; with
      --flip the mirrored copies N/2..N-1 repeat the labels of their originals).
    heldout: bool [M, A], row i the label of held-out image i (`TrainingData.heldout`).
    """
    names: tuple
    train: np.ndarray
    heldout: np.ndarray


def read_attributes(path):
    """Reads an attribute file in CelebA's format: an `AttributeTable`.

    Raises:
        DataError: in one line, naming the file and the line, when the file is missing,
            unreadable or not in the format (a count line that is not a whole number or
            does not match the rows, no or repeated attribute names, a row with another
            number of values or a value other than 1 or -1, a file name listed twice).
    """
    if not os.path.exists(path):
        raise DataError(f"attribute file {path} does not exist; pass the path of a "
                        "list_attr_celeba.txt")
    if os.path.isdir(path):
        raise DataError(f"{path} is a folder; pass the attribute file itself, e.g. "
                        f"{os.path.join(path, 'list_attr_celeba.txt')}")
    try:
        with open(path, encoding="utf-8") as file:
            lines = file.read().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"cannot read attribute file {path} ({error}); it must be "
                        f"{_FORMAT}") from error

    def fail(number, problem):
        raise DataError(f"attribute file {path}, line {number}: {problem}; the file must "
                        f"be in {_FORMAT}")

    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        fail(1, "the file is empty")
    count = lines[0].strip()
    if not count.isdigit():
        fail(1, f"expected the number of images, got {count[:40]!r}")
    if len(lines) < 2 or not lines[1].split():
        fail(2, "expected the attribute names")
    names = tuple(lines[1].split())
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        fail(2, f"attribute {repeated[0]} is named twice")
    files, values, seen = [], [], set()
    for number, line in enumerate(lines[2:], 3):
        fields = line.split()
        if len(fields) != len(names) + 1:
            fail(number, f"expected a file name and {len(names)} values, got "
                         f"{len(fields)} fields")
        bad = next((v for v in fields[1:] if v not in ("1", "-1")), None)
        if bad is not None:
            fail(number, f"value {bad!r} is neither 1 nor -1")
        if fields[0] in seen:
            fail(number, f"file {fields[0]} is listed twice")
        seen.add(fields[0])
        files.append(fields[0])
        values.append([v == "1" for v in fields[1:]])
    if int(count) != len(files):
        fail(1, f"the count says {int(count)} images but {len(files)} lines follow")
    labels = np.array(values, bool).reshape(len(files), len(names))
    return AttributeTable(names, tuple(files), labels)


def _split(labels, num_loaded, config):
    """RunLabels of the `num_loaded` images `pipeline.load` read, labels [num_loaded, A]:
    the last --heldout are held out, the rest train (repeated for --flip)."""
    num_train = num_loaded - config.heldout
    if num_train < 1:
        raise DataError(f"the run's data has {num_loaded} images and --heldout="
                        f"{config.heldout} leaves none to train on")
    train = labels[:num_train]
    if config.flip:
        train = np.concatenate([train, train])
    return train, labels[num_train:]


def labels_for_run(config, attributes_path=None):
    """The attribute labels of a run's training and held-out images: `RunLabels`.

    config: the run's TrainConfig. --dataset=folder reads attributes_path (CelebA's
    format) and matches each image of the folder to its line by base name;
    --dataset=celeb_a takes the labels TFDS stores with each example and ignores
    attributes_path.

    Raises:
        DataError: the attribute file is missing or malformed, an image has no line in
            it, or CelebA is not prepared.
        UserError: the run's dataset has no attribute labels (parts), or a folder run
            without attributes_path.
    """
    wanted = config.num_images + config.heldout
    if config.dataset == "folder":
        if attributes_path is None:
            raise UserError("a run on an image folder needs an attribute file; pass "
                            "--attributes=path/to/list_attr_celeba.txt")
        table = read_attributes(attributes_path)
        paths = image_files.image_paths(config.data_dir, wanted)
        labels = table.rows_for(paths, source=f"attribute file {attributes_path}")
        return RunLabels(table.names, *_split(labels, len(paths), config))
    if config.dataset == "celeb_a":
        if attributes_path is not None:
            logging.info("--dataset=celeb_a: the labels are TFDS's, %s is not read",
                         attributes_path)
        names, labels = celeb_a_labels(config.data_dir, wanted)
        return RunLabels(names, *_split(labels, len(labels), config))
    raise UserError(f"--dataset={config.dataset} images have no attribute labels; "
                    "attributes are for face runs (--dataset=folder or celeb_a)")


def celeb_a_labels(data_dir, num_images, split="train"):
    """(names, bool [n, A]) of the first `num_images` examples of TFDS celeb_a's split,
    in the order `images.load_celeb_a` loads their images (n = min(num_images, split
    size))."""
    examples, shown_dir, _ = image_files.celeb_a_examples(data_dir, split)
    spec = examples.element_spec
    if not isinstance(spec, dict) or not isinstance(spec.get("attributes"), dict):
        raise DataError(f"CelebA in {shown_dir} has no attribute labels; prepare it with "
                        "`tfds build celeb_a`, or use --dataset=folder with an attribute "
                        "file")
    names = tuple(spec["attributes"])
    rows = examples.take(num_images).map(
        lambda example: tf.stack([example["attributes"][name] for name in names]))
    labels = list(rows.as_numpy_iterator())
    return names, np.array(labels, bool).reshape(len(labels), len(names))


__all__ = ["AttributeTable", "RunLabels", "celeb_a_labels", "labels_for_run",
           "read_attributes"]
