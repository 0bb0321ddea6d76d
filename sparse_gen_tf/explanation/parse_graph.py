"""The And-Or parse graph of one generated image (§2.1), as dataclasses and as JSON.

For every sparse layer i (1 = top) and every spatial location (y, x) of its feature map
there is one AND node: an image needs content at all locations. Its OR nodes are the
channels that survive TopK and ReLU there, each with its coefficient s_j (the activation
value) and its links to the layer-(i+1) OR nodes it feeds.

Footprints. deconv_i is a 'same'-padded transposed convolution with kernel k and stride s:
the unit at y paints rows y*s - pad .. y*s - pad + k - 1 of the next map, pad = (k - s)//2
(the crop of `TransposedConv`), clipped to the map. A link goes from an OR node at (y, x, c)
to every surviving (y', x', c') inside that footprint, with weight

    w = s_j * ker_i[c, y' - y*s + pad, x' - x*s + pad, c'],

the contribution through the frozen linear map (Eq. 2-3). So for every OR node t below
the top, s_t = bias_i[c'] + Σ_incoming w: the graph accounts for each coefficient exactly.

AND nodes also carry `box`, the pixels (y0, x0, y1, x1) their units can paint (the
footprints composed down to the image), and `switched_off`, the channels TopK kept but
ReLU zeroed (value <= 0), so that the graph holds the TopK and ReLU masks of the parse:
`ParseGraph.masks()` gives them back, and `generator.parse(z, masks=...)` with them
reproduces the image.
"""

import dataclasses
import json

import numpy as np


@dataclasses.dataclass(frozen=True)
class Link:
    """An edge from an OR node to the OR node (y, x, channel) of the next layer it feeds."""
    y: int
    x: int
    channel: int
    weight: float


@dataclasses.dataclass(frozen=True)
class OrNode:
    """A surviving activation: channel, coefficient s_j > 0, and its links downwards."""
    channel: int
    coefficient: float
    links: tuple = ()


@dataclasses.dataclass(frozen=True)
class AndNode:
    """A location of a sparse feature map and the OR nodes that survive there.

    or_nodes are sorted by coefficient, largest first. switched_off: (channel, value) of
    the entries TopK kept and ReLU zeroed. box: (y0, x0, y1, x1) image pixels, end
    exclusive, that units at this location can paint.
    """
    y: int
    x: int
    box: tuple
    or_nodes: tuple = ()
    switched_off: tuple = ()


@dataclasses.dataclass(frozen=True)
class Layer:
    """One sparse layer: index (1 = top), shape (h, w, c), K, and h*w AND nodes."""
    index: int
    shape: tuple
    k: int
    and_nodes: tuple

    def and_node(self, y, x):
        return self.and_nodes[y * self.shape[1] + x]


@dataclasses.dataclass(frozen=True)
class ParseGraph:
    """The And-Or parse graph of one image: its latent z and the layers, top first.

    latent is () for a sample of the grammar prior, which is drawn as a parse and has no
    z; its top layer's OR nodes determine it (`top_activation`).
    """
    image_size: int
    latent: tuple
    layers: tuple

    def top_activation(self):
        """fm^1_s [1, h, w, c] float32, the top layer's surviving coefficients (0 elsewhere):
        `generator.parse_from_top` of it reproduces the parse, TopK_1 and ReLU keeping it
        as it is."""
        top = self.layers[0]
        activation = np.zeros((1,) + tuple(top.shape), np.float32)
        for a in top.and_nodes:
            for o in a.or_nodes:
                activation[0, a.y, a.x, o.channel] = o.coefficient
        return activation

    def or_nodes(self, layer):
        """[(y, x, OrNode)] of the 1-based layer, in AND-node order."""
        return [(a.y, a.x, o) for a in self.layers[layer - 1].and_nodes for o in a.or_nodes]

    def masks(self):
        """[(mask_T, mask_R)] per layer, float32 [1, h, w, c], as recorded in the parse."""
        result = []
        for layer in self.layers:
            mask_t = np.zeros((1,) + tuple(layer.shape), np.float32)
            mask_r = np.zeros_like(mask_t)
            for a in layer.and_nodes:
                for o in a.or_nodes:
                    mask_t[0, a.y, a.x, o.channel] = mask_r[0, a.y, a.x, o.channel] = 1.0
                for channel, _ in a.switched_off:
                    mask_t[0, a.y, a.x, channel] = 1.0
            result.append((mask_t, mask_r))
        return result

    def to_dict(self):
        return dataclasses.asdict(self)

    def to_json(self, **kwargs):
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_dict(cls, d):
        layers = tuple(
            Layer(index=l["index"], shape=tuple(l["shape"]), k=l["k"], and_nodes=tuple(
                AndNode(y=a["y"], x=a["x"], box=tuple(a["box"]),
                        or_nodes=tuple(OrNode(o["channel"], o["coefficient"],
                                              tuple(Link(**k) for k in o["links"]))
                                       for o in a["or_nodes"]),
                        switched_off=tuple(tuple(s) for s in a["switched_off"]))
                for a in l["and_nodes"]))
            for l in d["layers"])
        return cls(image_size=d["image_size"], latent=tuple(d["latent"]), layers=layers)

    @classmethod
    def from_json(cls, text):
        return cls.from_dict(json.loads(text))


def footprint(position, kernel_size, stride, size):
    """Rows [start, end) of the next map that a unit at `position` paints, and `start`
    unclipped (kernel row r paints row start_unclipped + r). 'same' padding, as in
    `TransposedConv`."""
    first = position * stride - (kernel_size - stride) // 2
    return max(first, 0), min(first + kernel_size, size), first


def image_boxes(config):
    """Per sparse layer, an int array [h, w, 4] of the pixel box (y0, x0, y1, x1) that
    units at each location can paint: footprints composed down to the image."""
    shapes = config.feature_map_shapes()
    boxes = []
    for i, (h, w, _) in enumerate(shapes):
        box = np.zeros((h, w, 4), np.int64)
        for y in range(h):
            for x in range(w):
                y0, y1, x0, x1 = y, y + 1, x, x + 1
                for j in range(i, len(shapes)):
                    k, s = config.kernel_sizes[j], config.strides[j]
                    rows, cols = (shapes[j + 1][:2] if j + 1 < len(shapes)
                                  else (config.image_size, config.image_size))
                    y0, y1 = footprint(y0, k, s, rows)[0], footprint(y1 - 1, k, s, rows)[1]
                    x0, x1 = footprint(x0, k, s, cols)[0], footprint(x1 - 1, k, s, cols)[1]
                box[y, x] = (y0, x0, y1, x1)
        boxes.append(box)
    return boxes


def _links(kernel, stride, y, x, channel, coefficient, below):
    """Links of the OR node (y, x, channel) whose deconv has `kernel` [c, k, k, c'] and
    `stride` to the surviving entries `below` [h', w', c'] (bool) of the next layer."""
    k = kernel.shape[1]
    h, w, _ = below.shape
    ya, yb, y_first = footprint(y, k, stride, h)
    xa, xb, x_first = footprint(x, k, stride, w)
    kernel = kernel[channel]  # [k, k, c']
    links = []
    for yy, xx, cc in np.argwhere(below[ya:yb, xa:xb]):
        yy, xx = yy + ya, xx + xa
        weight = coefficient * kernel[yy - y_first, xx - x_first, cc]
        links.append(Link(int(yy), int(xx), int(cc), float(weight)))
    return tuple(links)


def build(generator, z, parse=None):
    """The parse graphs of a batch of latents, or of parses.

    Args:
      generator: a `Generator`.
      z: [batch, latent_dim] (numpy or tensor), or None for parses that have no z (the
        grammar prior's samples); their graphs have latent ().
      parse: `generator.parse(z)` if already computed; required when z is None.
    Returns:
      list of `ParseGraph`, one per example.
    """
    parse = parse if parse is not None else generator.parse(z)
    config = generator.config
    batch = int(np.shape(parse["feature_maps"][0])[0])
    z = np.zeros([batch, 0], np.float32) if z is None else np.asarray(z, np.float32)
    features = [np.asarray(f) for f in parse["feature_maps"]]
    topk = [np.asarray(m) > 0 for m in parse["topk_masks"]]
    alive = [np.asarray(a) > 0 for a in parse["activations"]]
    boxes = image_boxes(config)
    kernels = [d.kernel.numpy() for d in generator.deconvs]
    n = len(features)
    graphs = []
    for b in range(len(z)):
        layers = []
        for i in range(n):
            h, w, c = features[i].shape[1:]
            and_nodes = []
            for y in range(h):
                for x in range(w):
                    fm = features[i][b, y, x]
                    channels = np.flatnonzero(alive[i][b, y, x])
                    channels = channels[np.argsort(-fm[channels], kind="stable")]
                    or_nodes = tuple(
                        OrNode(int(ch), float(fm[ch]), () if i + 1 == n else _links(
                            kernels[i], config.strides[i], y, x, ch, fm[ch],
                            alive[i + 1][b]))
                        for ch in channels)
                    off = np.flatnonzero(topk[i][b, y, x] & ~alive[i][b, y, x])
                    and_nodes.append(AndNode(
                        y, x, tuple(int(v) for v in boxes[i][y, x]), or_nodes,
                        tuple((int(ch), float(fm[ch])) for ch in off)))
            layers.append(Layer(i + 1, (h, w, c), generator.topks[i].k, tuple(and_nodes)))
        graphs.append(ParseGraph(config.image_size, tuple(float(v) for v in z[b]),
                                 tuple(layers)))
    return graphs
