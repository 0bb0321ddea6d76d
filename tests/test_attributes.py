"""Specification of the attribute labels: CelebA's file format, its one-line errors, and
the labels of a run's training and held-out images in the order the run loads them."""

import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from sparse_gen_tf.data import attributes, pipeline
from sparse_gen_tf.errors import DataError, UserError
from sparse_gen_tf.training.config import TrainConfig

NAMES = ("Eyeglasses", "Smiling", "Bald")


def attribute_text(rows, names=NAMES, count=None):
    """CelebA's format, with its spacing: a count, the names with a trailing space, then
    'file v1 ... vA' with two spaces before every 1 and one before every -1."""
    lines = [str(len(rows) if count is None else count), " ".join(names) + " "]
    for name, values in rows:
        lines.append(name + "".join("  1" if v else " -1" for v in values))
    return "\n".join(lines) + "\n"


def write_attributes(path, rows, **kwargs):
    path.write_text(attribute_text(rows, **kwargs))
    return str(path)


def one_line_error(excinfo):
    message = str(excinfo.value)
    assert "\n" not in message, message
    return message


def test_reads_names_file_names_and_labels_in_celeba_spacing(tmp_path):
    path = write_attributes(tmp_path / "list_attr_celeba.txt",
                            [("000001.jpg", (1, 0, 0)), ("000002.jpg", (0, 1, 1))])
    table = attributes.read_attributes(path)
    assert table.names == NAMES
    assert table.files == ("000001.jpg", "000002.jpg")
    np.testing.assert_array_equal(table.labels, [[True, False, False], [False, True, True]])
    assert table.labels.dtype == bool


@pytest.mark.parametrize("text,line,problem", [
    ("", 1, "empty"),
    ("many\nA B\nx.jpg 1 1\n", 1, "number of images"),
    ("2\nA B\nx.jpg 1 1\n", 1, "count says 2 images but 1"),
    ("1\n\n", 2, "attribute names"),
    ("1\nA A\nx.jpg 1 1\n", 2, "attribute A is named twice"),
    ("1\nA B\nx.jpg 1\n", 3, "file name and 2 values, got 2 fields"),
    ("1\nA B\nx.jpg 1 0\n", 3, "'0' is neither 1 nor -1"),
    ("2\nA B\nx.jpg 1 1\nx.jpg -1 1\n", 4, "x.jpg is listed twice"),
])
def test_a_malformed_file_is_a_one_line_error_naming_the_line(tmp_path, text, line, problem):
    path = tmp_path / "attr.txt"
    path.write_text(text)
    with pytest.raises(DataError) as excinfo:
        attributes.read_attributes(str(path))
    message = one_line_error(excinfo)
    assert f"{path}, line {line}:" in message and problem in message
    assert "list_attr_celeba.txt format" in message


def test_a_missing_file_and_a_folder_are_one_line_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist") as excinfo:
        attributes.read_attributes(str(tmp_path / "nothing.txt"))
    one_line_error(excinfo)
    with pytest.raises(DataError, match="is a folder") as excinfo:
        attributes.read_attributes(str(tmp_path))
    one_line_error(excinfo)


# labels_for_run on a folder


def write_images(folder, names, ext=".png"):
    """One 4 x 4 PNG per name whose pixels all equal its index, written last to first so
    that creation order cannot pass an order test by luck."""
    os.makedirs(folder, exist_ok=True)
    for index, name in reversed(list(enumerate(names))):
        pixels = np.full((4, 4, 3), index, np.uint8)
        tf.io.write_file(os.path.join(folder, name + ext), tf.io.encode_png(pixels))


def index_labels(index):
    """The planted labels of image `index`: its three lowest bits."""
    return tuple(bool(index >> bit & 1) for bit in range(3))


def folder_run(tmp_path, count, **config):
    """A folder of `count` images named in shuffled order, its attribute file (with an
    extra line for an image the folder lacks, and lines in another order), a config."""
    names = [f"{i:06d}" for i in range(count)]
    write_images(tmp_path / "faces", names)
    rows = [(name + ".png", index_labels(i)) for i, name in enumerate(names)]
    rows = rows[::-1] + [("999999.png", (1, 1, 1))]
    path = write_attributes(tmp_path / "attr.txt", rows)
    defaults = dict(dataset="folder", data_dir=str(tmp_path / "faces"), num_images=5,
                    heldout=3)
    return TrainConfig(**{**defaults, **config}), path


def test_folder_labels_follow_the_images_the_run_loads(tmp_path):
    config, path = folder_run(tmp_path, 10)
    labels = attributes.labels_for_run(config, path)
    data = pipeline.load_for(config)
    assert labels.names == NAMES
    # Each image's pixel is its index, so its planted labels can be read off the image.
    for images, got in ((data.images, labels.train), (data.heldout, labels.heldout)):
        want = [index_labels(int(image[0, 0, 0])) for image in images]
        np.testing.assert_array_equal(got, want)
    assert labels.train.shape == (5, 3) and labels.heldout.shape == (3, 3)


def test_a_small_folder_holds_out_its_last_images_as_the_run_did(tmp_path):
    config, path = folder_run(tmp_path, 6)  # 5 + 3 asked for, 6 there: 3 train, 3 held out
    labels = attributes.labels_for_run(config, path)
    np.testing.assert_array_equal(labels.train, [index_labels(i) for i in range(3)])
    np.testing.assert_array_equal(labels.heldout, [index_labels(i) for i in range(3, 6)])


def test_flip_repeats_the_training_labels_for_the_mirrored_copies(tmp_path):
    config, path = folder_run(tmp_path, 10, flip=True)
    labels = attributes.labels_for_run(config, path)
    np.testing.assert_array_equal(labels.train, [index_labels(i) for i in range(5)] * 2)
    assert labels.heldout.shape == (3, 3)


def test_images_match_lines_of_another_extension_by_their_name(tmp_path):
    write_images(tmp_path / "faces", ["000001", "000002"])
    path = write_attributes(tmp_path / "attr.txt",
                            [("000001.jpg", (1, 0, 0)), ("000002.jpg", (0, 0, 1))])
    config = TrainConfig(dataset="folder", data_dir=str(tmp_path / "faces"), num_images=1,
                         heldout=1)
    labels = attributes.labels_for_run(config, path)
    np.testing.assert_array_equal(labels.train, [[1, 0, 0]])
    np.testing.assert_array_equal(labels.heldout, [[0, 0, 1]])


def test_an_image_without_a_label_line_is_named(tmp_path):
    write_images(tmp_path / "faces", ["a", "b", "c"])
    path = write_attributes(tmp_path / "attr.txt", [("a.png", (1, 0, 0)), ("c.png", (0, 0, 1))])
    config = TrainConfig(dataset="folder", data_dir=str(tmp_path / "faces"), num_images=2,
                         heldout=1)
    with pytest.raises(DataError) as excinfo:
        attributes.labels_for_run(config, path)
    message = one_line_error(excinfo)
    assert os.path.join("faces", "b.png") in message and "1 of 3 images" in message


def test_a_folder_run_needs_a_file_and_parts_has_no_labels(tmp_path):
    config, _ = folder_run(tmp_path, 8)
    with pytest.raises(UserError, match="--attributes="):
        attributes.labels_for_run(config, None)
    with pytest.raises(UserError, match="no attribute labels"):
        attributes.labels_for_run(TrainConfig(), None)


# labels_for_run on TFDS celeb_a


def test_celeb_a_labels_are_tfds_attributes_in_loading_order(tmp_path):
    flags = np.array([[True, False], [False, False], [True, True], [False, True]])

    def as_dataset(self, *args, **kwargs):
        del self, args, kwargs
        return tf.data.Dataset.from_tensor_slices({
            "image": np.zeros((4, 218, 178, 3), np.uint8),
            "attributes": {"Smiling": flags[:, 0], "Bald": flags[:, 1]}})

    config = TrainConfig(dataset="celeb_a", data_dir=str(tmp_path), num_images=3,
                         heldout=1)
    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        labels = attributes.labels_for_run(config, "ignored.txt")
    assert sorted(labels.names) == ["Bald", "Smiling"]
    columns = [["Smiling", "Bald"].index(name) for name in labels.names]
    np.testing.assert_array_equal(labels.train, flags[:3][:, columns])
    np.testing.assert_array_equal(labels.heldout, flags[3:][:, columns])


def test_celeb_a_mock_data_has_celeba_s_forty_attributes(tmp_path):
    config = TrainConfig(dataset="celeb_a", data_dir=str(tmp_path), num_images=4,
                         heldout=2)
    with tfds.testing.mock_data(num_examples=8):
        labels = attributes.labels_for_run(config)
    assert len(labels.names) == 40 and "Eyeglasses" in labels.names
    assert labels.train.shape == (4, 40) and labels.heldout.shape == (2, 40)
