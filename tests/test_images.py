"""Specification of the image loaders: shapes, pixel values, order, and one-line errors."""

import os
import time

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from sparse_gen_tf.data import images
from sparse_gen_tf.errors import DataError

RED = (255, 0, 0)
BLUE = (0, 0, 255)
GREEN = (0, 255, 0)


def solid(height, width, colour, channels=3):
    """uint8 [height, width, channels] filled with `colour` (the first `channels` values)."""
    return np.broadcast_to(np.array(colour[:channels], np.uint8), (height, width, channels)).copy()


def write_png(path, pixels):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tf.io.write_file(str(path), tf.io.encode_png(pixels))


def write_jpeg(path, pixels):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tf.io.write_file(str(path), tf.io.encode_jpeg(pixels, quality=95))


def error_message(excinfo):
    message = str(excinfo.value)
    assert "\n" not in message, message
    return message


# center_crop_and_resize


def test_left_red_right_blue_keeps_its_layout_after_crop_and_resize():
    # 40 x 60: the centre crop keeps columns 10..49, i.e. 20 red then 20 blue columns.
    pixels = np.concatenate([solid(40, 30, RED), solid(40, 30, BLUE)], axis=1)
    out = images.center_crop_and_resize(tf.constant(pixels), 8).numpy()
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8
    # Away from the boundary the colours are exact; next to it they blend but stay on their side.
    np.testing.assert_array_equal(out[:, :3], solid(8, 3, RED))
    np.testing.assert_array_equal(out[:, 5:], solid(8, 3, BLUE))
    assert np.all(out[:, 3, 0] > out[:, 3, 2]) and np.all(out[:, 4, 2] > out[:, 4, 0])


@pytest.mark.parametrize("height,width", [(20, 60), (60, 20)])
def test_centre_crop_discards_the_edges_of_wide_and_tall_images(height, width):
    # A red centre square framed by green on the two long sides: only red may survive.
    pixels = solid(height, width, GREEN)
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    pixels[top:top + side, left:left + side] = RED
    out = images.center_crop_and_resize(tf.constant(pixels), 16).numpy()
    np.testing.assert_array_equal(out, solid(16, 16, RED))


def test_crop_keeps_the_centred_fraction_of_the_shorter_side():
    # 40 x 60 with a red 20 x 20 centre on green: crop=0.5 takes exactly that centre (half
    # of the 40-px side), while the largest square (crop=1) also keeps green.
    pixels = solid(40, 60, GREEN)
    pixels[10:30, 20:40] = RED
    np.testing.assert_array_equal(
        images.center_crop_and_resize(tf.constant(pixels), 8, crop=0.5).numpy(),
        solid(8, 8, RED))
    assert (images.center_crop_and_resize(tf.constant(pixels), 8).numpy()[..., 1] > 0).any()


def test_the_face_crop_is_celeba_s_108_px_box_at_any_scale():
    assert round(images.CELEBA_FACE_CROP * 178) == 108
    assert round(images.CELEBA_FACE_CROP * 89) == 54  # the half-size copy's box


def test_downscaling_averages_fine_detail_instead_of_aliasing():
    # A 1-pixel checkerboard shrunk 3x: point sampling would return pure black and white
    # pixels; an antialiased resize averages each footprint to mid-grey.
    checkerboard = (np.indices((48, 48)).sum(axis=0) % 2 * 255).astype(np.uint8)
    pixels = np.repeat(checkerboard[..., None], 3, axis=-1)
    out = images.center_crop_and_resize(tf.constant(pixels), 16).numpy()
    assert 100 <= out.min() and out.max() <= 155


def test_small_images_are_upscaled():
    out = images.center_crop_and_resize(tf.constant(solid(5, 7, BLUE)), 32).numpy()
    np.testing.assert_array_equal(out, solid(32, 32, BLUE))


# load_folder: decoding


def test_solid_colour_png_of_any_size_stays_that_colour(tmp_path):
    write_png(tmp_path / "a.png", solid(218, 178, (12, 200, 99)))
    out = images.load_folder(str(tmp_path), 16, None)
    assert out.shape == (1, 16, 16, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0], solid(16, 16, (12, 200, 99)))


def test_grayscale_png_becomes_three_equal_channels(tmp_path):
    write_png(tmp_path / "gray.png", solid(30, 50, (77,), channels=1))
    out = images.load_folder(str(tmp_path), 8, None)
    np.testing.assert_array_equal(out[0], solid(8, 8, (77, 77, 77)))


def test_rgba_png_drops_alpha(tmp_path):
    # Transparent pixels keep their colour: alpha is dropped, not composited onto a background.
    write_png(tmp_path / "rgba.png", solid(24, 24, (10, 20, 30, 0), channels=4))
    out = images.load_folder(str(tmp_path), 8, None)
    np.testing.assert_array_equal(out[0], solid(8, 8, (10, 20, 30)))


def test_jpeg_files_with_any_case_extension_are_decoded(tmp_path):
    write_jpeg(tmp_path / "a.JPG", solid(40, 30, RED))
    write_jpeg(tmp_path / "b.jpeg", solid(30, 40, BLUE))
    write_jpeg(tmp_path / "c.Jpeg", solid(20, 20, (128, 128, 128), channels=1))
    out = images.load_folder(str(tmp_path), 8, None)
    assert out.shape == (3, 8, 8, 3)
    # JPEG is lossy, so compare with a tolerance.
    for got, want in zip(out, [RED, BLUE, (128, 128, 128)]):
        np.testing.assert_allclose(got.astype(int), solid(8, 8, want).astype(int), atol=3)


# load_folder: which files, in which order


def write_numbered_pngs(folder, names):
    """Writes one 6 x 9 PNG per name whose pixels all equal the name's index.

    Files are written last to first, so that creation order cannot pass an order test by luck.
    """
    for index, name in reversed(list(enumerate(names))):
        write_png(folder / name, solid(6, 9, (index, index, index)))


def test_files_are_found_recursively_in_sorted_path_order(tmp_path):
    write_numbered_pngs(tmp_path, ["a.png", "b/a.png", "b/c.png", "c.png"])
    out = images.load_folder(str(tmp_path), 4, None)
    np.testing.assert_array_equal(out[:, 0, 0, 0], [0, 1, 2, 3])


def test_num_images_takes_the_first_files_in_sorted_order(tmp_path):
    write_numbered_pngs(tmp_path, [f"{i:02d}.png" for i in range(10)])
    out = images.load_folder(str(tmp_path), 4, 3)
    np.testing.assert_array_equal(out[:, 0, 0, 0], [0, 1, 2])


def test_num_images_above_the_count_uses_every_file(tmp_path):
    write_numbered_pngs(tmp_path, ["a.png", "b.png"])
    assert images.load_folder(str(tmp_path), 4, 100).shape == (2, 4, 4, 3)


def test_other_files_and_hidden_files_are_ignored(tmp_path):
    write_numbered_pngs(tmp_path, ["a.png"])
    (tmp_path / "list_attr_celeba.txt").write_text("not an image")
    (tmp_path / "._a.png").write_bytes(b"\x00\x05\x16\x07 macOS metadata")
    write_png(tmp_path / ".thumbnails" / "t.png", solid(4, 4, RED))
    assert images.load_folder(str(tmp_path), 4, None).shape == (1, 4, 4, 3)


def test_image_paths_name_the_file_of_each_loaded_image(tmp_path):
    names = ["b/a.png", "a.png", "c.png", "b/c.png"]
    write_numbered_pngs(tmp_path, names)
    (tmp_path / "._a.png").write_bytes(b"macOS metadata")
    paths = images.image_paths(str(tmp_path), 3)
    out = images.load_folder(str(tmp_path), 4, 3)
    assert len(paths) == len(out) == 3
    for path, image in zip(paths, out):
        assert os.path.relpath(path, tmp_path) == names[image[0, 0, 0]]


def test_more_files_than_one_batch_are_all_loaded_in_order(tmp_path):
    count = 2 * images._BATCH_SIZE + 5
    write_numbered_pngs(tmp_path, [f"{i:03d}.png" for i in range(count)])
    out = images.load_folder(str(tmp_path), 4, None)
    np.testing.assert_array_equal(out[:, 0, 0, 0], np.arange(count))


# load_folder: errors


def test_missing_folder_is_a_one_line_error_naming_it(tmp_path):
    missing = str(tmp_path / "no_such_folder")
    with pytest.raises(DataError) as excinfo:
        images.load_folder(missing, 8, None)
    message = error_message(excinfo)
    assert missing in message and "--data_dir" in message


def test_file_instead_of_folder_is_an_error(tmp_path):
    write_numbered_pngs(tmp_path, ["a.png"])
    with pytest.raises(DataError, match="not a folder") as excinfo:
        images.load_folder(str(tmp_path / "a.png"), 8, None)
    assert "a.png" in error_message(excinfo)


def test_folder_without_images_is_an_error_listing_the_extensions(tmp_path):
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(DataError) as excinfo:
        images.load_folder(str(tmp_path), 8, None)
    message = error_message(excinfo)
    assert str(tmp_path) in message and "empty" in message
    assert ".jpg" in message and ".jpeg" in message and ".png" in message


def corrupt_file_error(folder, bad_name, bad_bytes, good_count=3):
    """Loads a folder of good PNGs plus one bad file and returns the one-line error message."""
    write_numbered_pngs(folder, [f"{i:03d}.png" for i in range(good_count)])
    (folder / bad_name).write_bytes(bad_bytes)
    with pytest.raises(DataError) as excinfo:
        images.load_folder(str(folder), 8, None)
    message = error_message(excinfo)
    assert str(folder / bad_name) in message and "corrupt" in message
    # The reason is TensorFlow's, without its op-location decorations.
    assert "{{" not in message and "[Op:" not in message
    return message


def test_truncated_jpeg_is_named(tmp_path):
    jpeg = tf.io.encode_jpeg(np.random.default_rng(0).integers(0, 256, (40, 40, 3), np.uint8))
    corrupt_file_error(tmp_path, "050.jpg", jpeg.numpy()[:300])


def test_truncated_png_is_named(tmp_path):
    png = tf.io.encode_png(np.random.default_rng(0).integers(0, 256, (40, 40, 3), np.uint8))
    corrupt_file_error(tmp_path, "050.png", png.numpy()[:2000])


def test_corrupt_file_in_a_later_batch_is_named(tmp_path):
    # The failing batch is not the first, so the search must start where decoding stopped.
    # "063_bad.jpg" sorts between "063.png" and "064.png": it opens the second batch.
    jpeg = tf.io.encode_jpeg(solid(40, 40, RED)).numpy()
    bad_name = f"{images._BATCH_SIZE - 1:03d}_bad.jpg"
    corrupt_file_error(tmp_path, bad_name, jpeg[:-20], good_count=images._BATCH_SIZE + 10)


def test_text_file_named_jpg_is_named(tmp_path):
    message = corrupt_file_error(tmp_path, "x.jpg", b"<html>404 Not Found</html>")
    assert "not a JPEG or PNG" in message


def test_empty_file_named_png_is_named(tmp_path):
    assert "empty" in corrupt_file_error(tmp_path, "x.png", b"")


def test_corrupt_file_beyond_num_images_is_not_read(tmp_path):
    write_numbered_pngs(tmp_path, ["a.png", "b.png"])
    (tmp_path / "z.jpg").write_bytes(b"junk")
    assert images.load_folder(str(tmp_path), 4, 2).shape == (2, 4, 4, 3)


@pytest.mark.parametrize("image_size,num_images", [(0, None), (8, 0), (8, -5)])
def test_non_positive_sizes_are_errors(tmp_path, image_size, num_images):
    write_numbered_pngs(tmp_path, ["a.png"])
    with pytest.raises(DataError, match="positive integer") as excinfo:
        images.load_folder(str(tmp_path), image_size, num_images)
    error_message(excinfo)


# load_celeb_a


def test_celeb_a_gives_the_requested_number_of_square_images(tmp_path):
    with tfds.testing.mock_data(num_examples=6):
        out = images.load_celeb_a(str(tmp_path), 32, 4)
    assert out.shape == (4, 32, 32, 3) and out.dtype == np.uint8
    # Mock examples are random noise, so distinct images must stay distinct.
    assert len({image.tobytes() for image in out}) == 4


def test_celeb_a_with_fewer_images_than_requested_uses_them_all(tmp_path):
    with tfds.testing.mock_data(num_examples=3):
        assert images.load_celeb_a(str(tmp_path), 8, 10).shape == (3, 8, 8, 3)


def celeb_a_mock(pixels):
    """tfds.testing.mock_data that serves the given [n, 218, 178, 3] CelebA images."""

    def as_dataset(self, *args, **kwargs):
        del self, args, kwargs
        return tf.data.Dataset.from_tensor_slices({"image": pixels})

    return tfds.testing.mock_data(as_dataset_fn=as_dataset)


def test_celeb_a_keeps_the_central_178_square(tmp_path):
    # CelebA is 218 x 178: 20 rows above and below the central square must be cropped away.
    pixels = solid(218, 178, GREEN)
    pixels[20:198] = RED
    with celeb_a_mock(pixels[None]):
        out = images.load_celeb_a(str(tmp_path), 16, 1)
    np.testing.assert_array_equal(out[0], solid(16, 16, RED))


def test_celeb_a_matches_the_folder_loader_on_the_same_image(tmp_path):
    pixels = np.random.default_rng(1).integers(0, 256, (2, 218, 178, 3), np.uint8)
    for index, image in enumerate(pixels):
        write_png(tmp_path / "img_align_celeba" / f"{index:06d}.png", image)
    with celeb_a_mock(pixels):
        from_tfds = images.load_celeb_a(str(tmp_path), 24, 2)
    from_folder = images.load_folder(str(tmp_path / "img_align_celeba"), 24, 2)
    np.testing.assert_array_equal(from_tfds, from_folder)


def test_celeb_a_missing_fails_fast_with_a_one_line_error(tmp_path):
    start = time.monotonic()
    with pytest.raises(DataError) as excinfo:
        images.load_celeb_a(str(tmp_path), 8, 5)
    assert time.monotonic() - start < 30
    message = error_message(excinfo)
    assert str(tmp_path) in message and "tfds build celeb_a" in message
    assert "--dataset=folder" in message


def test_flip_appends_each_training_image_mirrored_and_leaves_the_heldout_ones(tmp_path):
    from sparse_gen_tf.data import pipeline
    for i in range(5):  # image i: red on the left, value i on the right
        pixels = solid(8, 8, (i, i, i))
        pixels[:, :3] = RED
        write_png(tmp_path / f"{i}.png", pixels)
    data = pipeline.load("folder", image_size=8, num_images=3, data_dir=str(tmp_path),
                         heldout=2, flip=True)
    assert data.num_examples == 6 and len(data.heldout) == 2
    np.testing.assert_array_equal(data.images[3:], data.images[:3, :, ::-1])
    np.testing.assert_array_equal(data.images[:3, 0, 0], [RED] * 3)  # as on disk
    np.testing.assert_array_equal(data.images[3:, 0, -1], [RED] * 3)  # mirrored
    np.testing.assert_array_equal(data.heldout[:, 0, 0], [RED] * 2)
    with pytest.raises(DataError, match="--flip is for image datasets"):
        pipeline.load("parts", image_size=16, num_images=4, flip=True)


def test_crop_reaches_the_folder_loader_and_is_refused_on_parts(tmp_path):
    from sparse_gen_tf.data import pipeline
    pixels = solid(16, 16, GREEN)
    pixels[4:12, 4:12] = RED
    for i in range(3):
        write_png(tmp_path / f"{i}.png", pixels)
    data = pipeline.load("folder", image_size=4, num_images=2, data_dir=str(tmp_path),
                         heldout=1, crop=0.5)
    np.testing.assert_array_equal(data.images, np.broadcast_to(RED, (2, 4, 4, 3)))
    np.testing.assert_array_equal(data.heldout, np.broadcast_to(RED, (1, 4, 4, 3)))
    with pytest.raises(DataError, match="--crop is for image datasets"):
        pipeline.load("parts", image_size=16, num_images=4, crop=0.5)
