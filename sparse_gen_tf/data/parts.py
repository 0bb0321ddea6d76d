"""The embedded default dataset: images drawn from a known two-level And-Or grammar.

The images need no download: they are rasterized with numpy, deterministically from
a seed, and the parse graph of every image is kept so that what the generator learns
can be scored against the truth. The grammar mirrors the generator it is meant for,
whose top feature map is 2x2 (one AND node per quadrant) and whose bottom feature map
is 4x4 (one AND node per cell, painted by one bottom kernel):

    image     = AND(quadrant[0, 0], quadrant[0, 1], quadrant[1, 0], quadrant[1, 1])
    quadrant  = OR(composite[q, 0], ..., composite[q, num_composites - 1])
    composite = AND(part in its top-left, top-right, bottom-left, bottom-right cell)
    cell      = coefficient * part,  coefficient ~ Uniform[0.6, 1.0)

- An image is image_size x image_size x 3 and is split into a 4x4 grid of cells of
  cell = image_size / 4 pixels. Every cell holds exactly one part; there are no empty
  cells, so every cell has a ground-truth label.
- The part dictionary holds num_parts cell-sized RGB patterns: the first num_parts
  entries of `_CATALOGUE`, each a distinct shape (disk, ring, cross, bars, ...) in a
  distinct fully saturated hue on a black background, with a margin of
  max(1, cell // 8) pixels so that neighbouring parts never touch. Shapes are
  rasterized without anti-aliasing, so each part is exactly one colour times a 0/1
  mask. The hues were assigned to the shapes so that similar shapes get dissimilar
  hues: the normalized correlation of any two parts (background subtracted) is
  below 0.6 at every image size.
- Quadrant q = 2 * row + col has its own table of num_composites composites, each a
  fixed 2x2 arrangement of part ids. The table is drawn once from `seed`; within a
  quadrant the composites differ in every cell, and every part occurs somewhere.
- Each image chooses one composite per quadrant (uniformly) and one intensity
  coefficient per cell (the sparse coefficient of that cell's part).

Pixel values. In the generator's representation, float32 in [-1, 1], the black
background is -1 and a part at full intensity is -1 + 2 * colour * mask. A part is
placed with coefficient s as

    pixel = -1 + s * (part + 1),

i.e. the coefficient scales the part's deviation from the background, as a sparse
coefficient scales a basis function added to a bias. Stored images are uint8 in
[0, 255], with value = round((pixel + 1) * 127.5).

The part dictionary and composite tables depend on `seed` only; `image_seed` changes
only the per-image choices, so held-out images share the grammar of the training
images.

Geometries (`GEOMETRIES`, train.py's --parts_geometry): the same grammar drawn at another
size, with the generator it is meant for:

    default  32x32, 8-pixel cells, 16 parts, 8 composites per quadrant; top kernels 4
             (stride 2), so a top AND node reaches one bottom cell into its neighbours
    large    64x64, 16-pixel cells, 12 parts, 6 composites per quadrant; d = 100 and 256
             top channels
    overlap  the default's images, but top kernels 6 (stride 2): every top AND node
             reaches all four quadrants, so a quadrant is no longer one node's alone
"""

import colorsys
import dataclasses
import numbers

import numpy as np

GRID = 4  # Cells per image side: the bottom feature map is GRID x GRID.
MIN_IMAGE_SIZE = 32  # Below 8-pixel cells the shapes blur into one another.
MIN_PARTS = 4  # A composite needs four parts.
COEFFICIENT_RANGE = (0.6, 1.0)

# Drawn per image, in order: 4 composite choices, then 16 cell coefficients.
_DRAWS_PER_IMAGE = 4 + GRID * GRID
# Separate the stream of the grammar from the stream of the images, so that
# image_seed == seed does not reuse the same random numbers for both.
_GRAMMAR_STREAM, _IMAGE_STREAM = 0, 1

# Shapes as predicates on pixel centres (u, v) in [-1, 1]^2 of the drawing area,
# u to the right and v downwards. Thresholds are in these normalized units so the
# shapes scale with the cell; 0.34 is one third of the half-width, which makes bars
# two pixels wide at the smallest (6-pixel) drawing area.
_BAR = 0.34
_SHAPES = {
    "disk": lambda u, v: u * u + v * v <= 1.0,
    "ring": lambda u, v: (u * u + v * v <= 1.0) & (u * u + v * v >= 0.45),
    "square_outline": lambda u, v: np.maximum(np.abs(u), np.abs(v)) > 0.6,
    "filled_square": lambda u, v: np.maximum(np.abs(u), np.abs(v)) <= 0.6,
    "cross": lambda u, v: (np.abs(u) < _BAR) | (np.abs(v) < _BAR),
    "horizontal_bar": lambda u, v: np.abs(v) < _BAR,
    "vertical_bar": lambda u, v: np.abs(u) < _BAR,
    "diagonal": lambda u, v: np.abs(u - v) < 0.35,
    "anti_diagonal": lambda u, v: np.abs(u + v) < 0.35,
    "x": lambda u, v: (np.abs(u - v) < 0.35) | (np.abs(u + v) < 0.35),
    "triangle": lambda u, v: np.abs(u) <= (v + 1.0) / 2.0,
    "checker": lambda u, v: u * v > 0,
    "corners": lambda u, v: (np.abs(u) > _BAR) & (np.abs(v) > _BAR),
    "ell": lambda u, v: (u < -_BAR) | (v > _BAR),
    "tee": lambda u, v: (v < -_BAR) | (np.abs(u) < _BAR),
    "stripes": lambda u, v: (np.abs(v) > _BAR) & (np.abs(v) < 1.0 - _BAR),
}

# (shape, hue in sixteenths of the colour wheel). The pairing came from a search
# that minimized the largest correlation between parts: a part is colour x mask, so
# the correlation of two parts is the product of their shape and colour
# correlations, and shapes that overlap much (disk, ring, square outline) must get
# hues far apart.
_CATALOGUE = (
    ("disk", 0),
    ("ring", 4),
    ("square_outline", 12),
    ("filled_square", 13),
    ("cross", 6),
    ("horizontal_bar", 2),
    ("vertical_bar", 3),
    ("diagonal", 15),
    ("anti_diagonal", 8),
    ("x", 5),
    ("triangle", 9),
    ("checker", 11),
    ("corners", 1),
    ("ell", 7),
    ("tee", 10),
    ("stripes", 14),
)
MAX_PARTS = len(_CATALOGUE)
PART_NAMES = tuple(shape for shape, _ in _CATALOGUE)


@dataclasses.dataclass(frozen=True)
class Geometry:
    """One size of the grammar and the generator flags it is meant for.

    Attributes:
        image_size: image side in pixels (cells are image_size / 4).
        num_parts: size of the part dictionary.
        num_composites: composites per quadrant (the OR node's branching).
        model_flags: train.py's generator flags for it (--image_size ... --topk), with
            --parts_geometry; the benchmarks train with these.
    """

    image_size: int
    num_parts: int
    num_composites: int
    model_flags: tuple

    def flags(self, name, dense=False):
        """train.py's data and generator flags for this geometry, called name; dense: with
        K = h*w*c of every feature map (the dense generator) instead of its --topk."""
        flags = (f"--parts_geometry={name}",) + self.model_flags
        if not dense:
            return flags
        values = dict(flag[2:].split("=", 1) for flag in self.model_flags)
        strides = [int(v) for v in values["strides"].split(",")]
        side, topk = self.image_size // int(np.prod(strides)), []
        for c, stride in zip(values["channels"].split(","), [1] + strides[:-1]):
            side *= stride
            topk.append(side * side * int(c))
        return tuple(f for f in flags if not f.startswith("--topk=")) + (
            "--topk=" + ",".join(map(str, topk)),)


GEOMETRIES = {
    "default": Geometry(32, 16, 8, (
        "--image_size=32", "--latent_dim=32", "--channels=64,64", "--kernel_sizes=4,8",
        "--strides=2,8", "--topk=8,24")),
    "large": Geometry(64, 12, 6, (
        "--image_size=64", "--latent_dim=100", "--channels=256,64", "--kernel_sizes=4,16",
        "--strides=2,16", "--topk=8,24")),
    # A transposed conv of kernel 6 and stride 2 crops (6 - 2) // 2 = 2 pixels, so top
    # unit i paints bottom rows 2i - 2 .. 2i + 3: on the 2x2 top map, all four rows.
    "overlap": Geometry(32, 16, 8, (
        "--image_size=32", "--latent_dim=32", "--channels=64,64", "--kernel_sizes=6,8",
        "--strides=2,8", "--topk=8,24")),
}
DEFAULT_GEOMETRY = "default"


def geometry(name: str) -> Geometry:
    """The geometry called name (a key of GEOMETRIES).

    Raises:
        ValueError: if there is no such geometry.
    """
    if name not in GEOMETRIES:
        raise ValueError(f"unknown parts geometry {name!r}; use one of "
                         f"{', '.join(GEOMETRIES)}")
    return GEOMETRIES[name]


def generate_geometry(name: str, num_images: int, image_size: int | None = None,
                      seed: int = 0,
                      image_seed: int | None = None) -> "tuple[np.ndarray, GroundTruth]":
    """`generate` with the image size, parts and composites of GEOMETRIES[name].

    image_size: None for the geometry's own; else a run's --image_size, which the
        default geometry takes as it is (any size `generate` takes) and the others check.

    Raises:
        ValueError: if name is unknown or image_size is not the geometry's.
    """
    found = geometry(name)
    if image_size is None:
        image_size = found.image_size
    elif name != DEFAULT_GEOMETRY and image_size != found.image_size:
        raise ValueError(f"--parts_geometry={name} draws {found.image_size}x"
                         f"{found.image_size} images, but --image_size={image_size}; use "
                         f"{' '.join(found.flags(name))}")
    return generate(num_images, image_size=image_size, seed=seed,
                    num_parts=found.num_parts, num_composites=found.num_composites,
                    image_seed=image_seed)


@dataclasses.dataclass(frozen=True, eq=False)
class GroundTruth:
    """The grammar and the parse graph of every generated image.

    Attributes:
        parts: [num_parts, cell, cell, 3] float32 in [-1, 1], each part at full
            intensity (coefficient 1).
        part_labels: [N, 4, 4] int32, the part id in each cell (row, col).
        composite_labels: [N, 2, 2] int32, the composite chosen in each quadrant.
        coefficients: [N, 4, 4] float32, the intensity of each placed part.
        composites: [4, num_composites, 2, 2] int32, the part ids of each quadrant's
            composites; quadrant q = 2 * row + col.
    """

    parts: np.ndarray
    part_labels: np.ndarray
    composite_labels: np.ndarray
    coefficients: np.ndarray
    composites: np.ndarray


def generate(num_images: int, image_size: int = 32, seed: int = 0, num_parts: int = 16,
             num_composites: int = 8,
             image_seed: int | None = None) -> tuple[np.ndarray, GroundTruth]:
    """Draws images from the And-Or grammar of this module.

    The first k images of generate(n) equal generate(k) for every k < n, because each
    image takes a fixed number of draws from one sequential stream.

    Args:
        num_images: N, the number of images (0 gives only the grammar).
        image_size: side in pixels, divisible by 4 and at least 32.
        seed: seeds the part dictionary and the composite tables, and the images
            too unless `image_seed` is given.
        num_parts: size of the part dictionary, 4 to 16.
        num_composites: composites per quadrant (the OR node's branching), 1 to
            num_parts.
        image_seed: seeds only the per-image choices; None means `seed`.

    Returns:
        (images, truth): images uint8 [N, image_size, image_size, 3] and the
        GroundTruth of the grammar and of each image.

    Raises:
        ValueError: if an argument is out of range.
    """
    _check_int("num_images", num_images, minimum=0)
    _check_int("image_size", image_size, minimum=MIN_IMAGE_SIZE)
    if image_size % GRID:
        raise ValueError(f"image_size must be divisible by {GRID}, got {image_size}; "
                         f"use e.g. 32 or 64.")
    _check_int("seed", seed, minimum=0)
    image_seed = seed if image_seed is None else image_seed
    _check_int("image_seed", image_seed, minimum=0)
    _check_int("num_parts", num_parts, minimum=MIN_PARTS, maximum=MAX_PARTS)
    _check_int("num_composites", num_composites, minimum=1)
    if num_composites > num_parts:
        # Each cell of a quadrant takes a distinct part in each composite.
        raise ValueError(f"num_composites ({num_composites}) must not exceed num_parts "
                         f"({num_parts}); lower num_composites or raise num_parts.")

    parts = _make_parts(image_size // GRID, num_parts)
    grammar_rng = np.random.default_rng([seed, _GRAMMAR_STREAM])
    composites = _draw_composites(grammar_rng, num_parts, num_composites)

    image_rng = np.random.default_rng([image_seed, _IMAGE_STREAM])
    # One block of draws per image, so image i never depends on num_images.
    draws = image_rng.random((num_images, _DRAWS_PER_IMAGE))
    composite_labels = np.minimum((draws[:, :4] * num_composites).astype(np.int32),
                                  num_composites - 1).reshape(num_images, 2, 2)
    low, high = COEFFICIENT_RANGE
    coefficients = (low + (high - low) * draws[:, 4:]).astype(np.float32)
    coefficients = coefficients.reshape(num_images, GRID, GRID)

    # composites[quadrant, choice] is [2, 2]; gathering gives [N, qrow, qcol, r, c],
    # and cell (2 * qrow + r, 2 * qcol + c) is then a transpose away.
    quadrant = np.arange(4).reshape(1, 2, 2)
    part_labels = composites[quadrant, composite_labels]
    part_labels = part_labels.transpose(0, 1, 3, 2, 4).reshape(num_images, GRID, GRID)

    pixels = render(part_labels, coefficients, parts)
    pixels += 1.0
    pixels *= 127.5
    images = np.clip(np.round(pixels, out=pixels), 0, 255, out=pixels).astype(np.uint8)
    truth = GroundTruth(parts=parts, part_labels=part_labels.astype(np.int32),
                        composite_labels=composite_labels, coefficients=coefficients,
                        composites=composites)
    return images, truth


def render(part_labels, coefficients, parts) -> np.ndarray:
    """Paints each cell with its part scaled by its coefficient.

    A cell with part p and coefficient s is -1 + s * (parts[p] + 1): the coefficient
    scales the part's deviation from the black background.

    Args:
        part_labels: [N, 4, 4] integer part ids in [0, num_parts).
        coefficients: [N, 4, 4] intensities (the grammar draws them from [0.6, 1)).
        parts: [num_parts, cell, cell, 3] parts in [-1, 1] at full intensity.

    Returns:
        [N, 4 * cell, 4 * cell, 3] float32 in [-1, 1] when coefficients are in [0, 1].

    Raises:
        ValueError: if the shapes disagree or a label is not a part id.
    """
    part_labels = np.asarray(part_labels)
    coefficients = np.asarray(coefficients, dtype=np.float32)
    parts = np.asarray(parts, dtype=np.float32)
    if parts.ndim != 4 or parts.shape[1] != parts.shape[2] or parts.shape[3] != 3:
        raise ValueError(f"parts must be [num_parts, cell, cell, 3], got {parts.shape}.")
    if part_labels.ndim != 3 or part_labels.shape[1:] != (GRID, GRID):
        raise ValueError(f"part_labels must be [N, {GRID}, {GRID}], got "
                         f"{part_labels.shape}.")
    if coefficients.shape != part_labels.shape:
        raise ValueError(f"coefficients must have the shape of part_labels "
                         f"{part_labels.shape}, got {coefficients.shape}.")
    if not np.issubdtype(part_labels.dtype, np.integer):
        raise ValueError(f"part_labels must be integers, got {part_labels.dtype}.")
    if part_labels.size and (part_labels.min() < 0 or part_labels.max() >= len(parts)):
        raise ValueError(f"part_labels must lie in [0, {len(parts)}), got "
                         f"[{part_labels.min()}, {part_labels.max()}].")

    num_images, cell = len(part_labels), parts.shape[1]
    # [N, row, col, y, x, 3] -> [N, row, y, col, x, 3] lays the cells out as the image.
    # In place: the gathered array is the only large temporary.
    cells = parts[part_labels]
    cells += 1.0
    cells *= coefficients[..., None, None, None]
    cells -= 1.0
    image = cells.transpose(0, 1, 3, 2, 4, 5)
    return image.reshape(num_images, GRID * cell, GRID * cell, 3)


def _make_parts(cell: int, num_parts: int) -> np.ndarray:
    """Rasterizes the first num_parts catalogue entries; [num_parts, cell, cell, 3]."""
    margin = max(1, cell // 8)
    size = cell - 2 * margin
    centres = (np.arange(size) + 0.5) / size * 2.0 - 1.0
    v, u = np.meshgrid(centres, centres, indexing="ij")
    parts = np.full((num_parts, cell, cell, 3), -1.0, dtype=np.float32)
    for index, (shape, hue) in enumerate(_CATALOGUE[:num_parts]):
        mask = _SHAPES[shape](u, v)
        colour = np.asarray(colorsys.hsv_to_rgb(hue / 16.0, 1.0, 1.0), dtype=np.float32)
        parts[index, margin:cell - margin, margin:cell - margin] = (
            -1.0 + 2.0 * mask[..., None] * colour)
    return parts


def _draw_composites(rng: np.random.Generator, num_parts: int,
                     num_composites: int) -> np.ndarray:
    """Draws each quadrant's composite table; [4, num_composites, 2, 2] int32.

    Each of the 16 cells gets num_composites distinct parts (one per composite), so
    the composites of a quadrant differ in every cell and a cell's part identifies
    the quadrant's composite. Parts the draw missed then replace surplus copies of
    the most frequent part, so every part is seen in training.
    """
    table = np.stack([rng.permutation(num_parts)[:num_composites]
                      for _ in range(GRID * GRID)])  # [cell, composite]
    counts = np.bincount(table.ravel(), minlength=num_parts)
    for missing in np.flatnonzero(counts == 0):
        # 16 * num_composites >= num_parts slots, so while a part is missing another
        # has a copy to spare; the missing part is in no cell, so no cell repeats it.
        surplus = int(np.argmax(counts))
        cell, choice = np.argwhere(table == surplus)[0]
        table[cell, choice] = missing
        counts[surplus] -= 1
        counts[missing] += 1
    # Cells are ordered [quadrant, r, c]; reorder to [quadrant, composite, r, c].
    return table.reshape(4, 2, 2, num_composites).transpose(0, 3, 1, 2).astype(np.int32)


def _check_int(name: str, value, minimum: int, maximum: int | None = None) -> None:
    """Raises ValueError unless value is an int in [minimum, maximum]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}.")
    if value < minimum or (maximum is not None and value > maximum):
        upper = "" if maximum is None else f" and at most {maximum}"
        raise ValueError(f"{name} must be at least {minimum}{upper}, got {value}.")
