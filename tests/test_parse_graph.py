"""The And-Or parse graph (§2.1): structure, exact bookkeeping, JSON, and a known answer."""

import numpy as np
import tensorflow as tf

from sparse_gen_tf import Generator, GeneratorConfig
from sparse_gen_tf.explanation import parse_graph, parts_scores
from sparse_gen_tf.data import parts
from sparse_gen_tf.learning.inference import infer

CONFIG = GeneratorConfig(image_size=16, latent_dim=8, channels=(8, 8, 4), topk=(6, 12, 20),
                         kernel_sizes=(3, 4, 4), strides=(1, 2, 4))


def random_generator(config=CONFIG):
    generator = Generator(config)
    for i, weight in enumerate(generator.trainable_weights):
        weight.assign(tf.random.stateless_normal(weight.shape, [0, i]) * 0.5)
    return generator


def test_one_and_node_per_location_and_or_nodes_are_the_survivors():
    generator = random_generator()
    z = tf.random.stateless_normal([2, 8], [1, 1])
    parse = generator.parse(z)
    graphs = parse_graph.build(generator, z, parse)
    for b, graph in enumerate(graphs):
        for i, layer in enumerate(graph.layers):
            h, w, _ = layer.shape
            assert len(layer.and_nodes) == h * w
            activation = parse["activations"][i][b].numpy()
            assert len(graph.or_nodes(i + 1)) == (activation > 0).sum() <= layer.k
            for y, x, node in graph.or_nodes(i + 1):
                assert node.coefficient == activation[y, x, node.channel] > 0


def test_masks_of_the_graph_reproduce_the_image():
    generator = random_generator()
    z = tf.random.stateless_normal([1, 8], [2, 2])
    graph = parse_graph.build(generator, z)[0]
    frozen = generator.parse(z, masks=graph.masks())
    np.testing.assert_array_equal(frozen["image"], generator(z))


def test_link_weights_account_for_every_coefficient_below_the_top():
    # s_t = bias[c_t] + Σ of the weights of t's incoming links: nothing is lost.
    generator = random_generator()
    z = tf.random.stateless_normal([1, 8], [3, 3])
    graph = parse_graph.build(generator, z)[0]
    for i in range(1, generator.num_layers):
        bias = generator.deconvs[i - 1].bias.numpy()
        incoming = {}
        for _, _, node in graph.or_nodes(i):
            for link in node.links:
                key = (link.y, link.x, link.channel)
                incoming[key] = incoming.get(key, 0.0) + link.weight
        for y, x, node in graph.or_nodes(i + 1):
            total = bias[node.channel] + incoming.get((y, x, node.channel), 0.0)
            np.testing.assert_allclose(total, node.coefficient, rtol=1e-5, atol=1e-5)


def test_links_stay_inside_the_kernel_footprint():
    generator = random_generator()
    graph = parse_graph.build(generator, tf.random.stateless_normal([1, 8], [4, 4]))[0]
    for i in range(1, generator.num_layers):
        k, s = CONFIG.kernel_sizes[i - 1], CONFIG.strides[i - 1]
        for y, x, node in graph.or_nodes(i):
            for link in node.links:
                assert y * s - (k - s) // 2 <= link.y < y * s - (k - s) // 2 + k
                assert x * s - (k - s) // 2 <= link.x < x * s - (k - s) // 2 + k


def test_json_round_trip_is_exact():
    generator = random_generator()
    graph = parse_graph.build(generator, tf.random.stateless_normal([1, 8], [5, 5]))[0]
    text = graph.to_json()
    assert parse_graph.ParseGraph.from_json(text) == graph
    assert parse_graph.ParseGraph.from_json(text).to_json() == text


def test_image_boxes_of_the_default_architecture():
    boxes = parse_graph.image_boxes(GeneratorConfig())
    # Bottom: kernel = stride = 8, each unit paints exactly its 8x8 cell.
    np.testing.assert_array_equal(boxes[1][1, 2], [8, 16, 16, 24])
    # Top: kernel 4 stride 2 'same' reaches bottom rows 0-2 from row 0, 1-3 from row 1.
    np.testing.assert_array_equal(boxes[0][0, 0], [0, 0, 24, 24])
    np.testing.assert_array_equal(boxes[0][1, 1], [8, 8, 32, 32])


def hand_built_generator(part_images):
    """z [16 * P] -> one top unit per (cell, part) -> the same unit below -> the part.

    The bottom kernels are the parts in logit space, atanh(part) + 3 over a bias of -3
    (black); a small positive FC bias keeps every unit alive at z = 0, so inference
    started there can grow the right units.
    """
    p = len(part_images)
    config = GeneratorConfig(image_size=32, latent_dim=16 * p, channels=(p, p),
                             topk=(16 * p, 16 * p), kernel_sizes=(1, 8), strides=(1, 8))
    generator = Generator(config)
    generator.fc.kernel.assign(np.eye(16 * p, dtype=np.float32))
    generator.fc.bias.assign(np.full(16 * p, 0.05, np.float32))
    generator.deconvs[0].kernel.assign(np.eye(p, dtype=np.float32)[:, None, None, :])
    generator.deconvs[0].bias.assign(np.zeros(p, np.float32))
    generator.deconvs[1].kernel.assign(np.arctanh(np.clip(part_images, -0.995, 0.995)) + 3.0)
    generator.deconvs[1].bias.assign(np.full(3, -3.0, np.float32))
    return generator


def test_parse_of_an_image_made_of_known_parts_finds_each_part_exactly():
    _, truth = parts.generate(0, image_size=32, num_parts=8)
    generator = hand_built_generator(truth.parts)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 8, size=(2, 4, 4))
    images = parts.render(labels, rng.uniform(0.6, 1.0, size=(2, 4, 4)), truth.parts)
    run = tf.function(lambda x: infer(
        generator, x, steps=0, step_size=0.03, sigma=0.3, seed=0, refine_steps=200,
        bank=tf.zeros([1, generator.config.latent_dim])), jit_compile=True)
    z = run(tf.constant(images)).numpy()
    dominant = parts_scores.dominant_channels(
        parts_scores.bottom_contributions(generator, z))
    np.testing.assert_array_equal(dominant, labels)
    for b, graph in enumerate(parse_graph.build(generator, z)):
        bottom = graph.layers[-1]
        found = [[bottom.and_node(y, x).or_nodes[0].channel for x in range(4)]
                 for y in range(4)]
        np.testing.assert_array_equal(found, labels[b])
