"""The dashboard's parse editor (reports/dashboard/editor.py, static/generator.js and
static/editor.js) in a real headless Chromium: every kind of edit, made through the page's
buttons, re-renders the parse in the page, and the page's image equals TensorFlow's render
of the same edited parse (`Generator.parse(z, masks=...)` for frozen masks,
`editor.edited_parse` otherwise) to 1e-3.

The browser is test_dashboard.py's (DevTools protocol on a pipe); the tests skip where no
chromium is installed.
"""

import json
import os

import numpy as np
import pytest

from test_dashboard import CHROMIUM, Chromium, restored, train_and_explain

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (Debian: "
                                 "apt-get install chromium)")]

TOLERANCE = 1e-3


# The face model's geometry (celeba.flags: 64x64 colour images, a 2x2 top map, kernels
# 4 and 16, strides 2 and 16) at a tiny width, trained on a folder of drawn faces.
FACE_FLAGS = ("--image_size=64", "--latent_dim=8", "--channels=16,8", "--topk=8,16",
              "--kernel_sizes=4,16", "--strides=2,16", "--batch_size=16")


def write_faces(folder, count=32):
    """count 64x64 PNG faces: a skin-coloured ellipse, two dark eyes and a red mouth,
    each jittered, on a coloured background."""
    import tensorflow as tf
    os.makedirs(folder)
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:64, 0:64]
    for i in range(count):
        cy, cx = 32 + rng.integers(-3, 4, 2)
        image = np.zeros((64, 64, 3)) + rng.uniform(0, 255, 3)
        image[((y - cy) / 26) ** 2 + ((x - cx) / 20) ** 2 < 1] = (224, 172, 140)
        for ex in (cx - 9, cx + 9):
            image[(y - cy + 8) ** 2 + (x - ex) ** 2 < rng.integers(6, 14)] = (40, 30, 30)
        image[(np.abs(y - cy - 12) < 2) & (np.abs(x - cx) < rng.integers(5, 10))] = (
            180, 40, 50)
        tf.io.write_file(os.path.join(folder, f"{i:06d}.png"),
                         tf.io.encode_png(image.astype(np.uint8)))


@pytest.fixture(scope="module", params=["parts", "faces"])
def page(request, tmp_path_factory):
    """(the dashboard's index.html, the run's generator): a parts model, or a face model
    of the paper's CelebA geometry."""
    root = tmp_path_factory.mktemp(f"editor_{request.param}")
    if request.param == "parts":
        index = train_and_explain(str(root / "run"), "--topk=4,8")
    else:
        write_faces(str(root / "faces"))
        index = train_and_explain(str(root / "run"), "--dataset=folder",
                                  f"--data_dir={root / 'faces'}", "--num_images=32",
                                  *FACE_FLAGS)
    model, _ = restored(str(root / "run"))
    return index, model.generator


@pytest.fixture(scope="module")
def browser():
    chromium = Chromium()
    yield chromium
    chromium.close()


def parse_of(generator, explained, name):
    """(top feature map fm^1 [1, s, s, c_1], the unedited parse) of explained parse `name`,
    from its JSON file: z through the FC map, or a grammar sample's top activation."""
    from sparse_gen_tf.explanation.parse_graph import ParseGraph
    with open(os.path.join(explained, f"{name}.json")) as f:
        graph = ParseGraph.from_dict(json.load(f))
    if graph.latent:
        top = generator.top_feature_map(np.asarray(graph.latent, np.float32)[None])
    else:
        top = graph.top_activation()
    return top, generator.parse_from_top(top)


def tensorflow_render(generator, explained, name, edits):
    """TensorFlow's image [H*W*3] of parse `name` under the page's edits (Editor.edits())."""
    from sparse_gen_tf.reports.dashboard.editor import edited_parse
    top, parse = parse_of(generator, explained, name)
    masks = list(zip(parse["topk_masks"], parse["relu_masks"]))
    scales = {(l, y, x, c): f for l, y, x, c, f in edits["scales"]}
    swaps = {(y, x): np.asarray(parse_of(generator, explained, donor)[1]["activations"][0]
                                )[0, y, x] for y, x, donor in edits["swaps"]}
    return np.asarray(edited_parse(generator, top, masks, scales, swaps,
                                   rerun=edits["rerun"])["image"]).reshape(-1)


class Page:
    """The browser on one editable parse panel of the dashboard."""

    def __init__(self, browser, name):
        self.browser, self.name = browser, name
        self.editor = f"ParseEditor.editors.get('{name}')"
        self.panel = f"document.getElementById('image-{name}')"
        self.times = []

    def run(self, script):
        """Runs script in the page, then returns the editor's state: {image, edits,
        ms (the last re-render), history}."""
        return self.browser.evaluate(f"""(() => {{ const panel = {self.panel};
            {script};
            const e = {self.editor};
            return {{image: e.image(), edits: e.edits(), ms: e.lastRenderMs,
                     history: e.history.length}}; }})()""")

    def edit(self, script):
        state = self.run(script)
        self.times.append(state["ms"])
        return state

    def click(self, selector):
        return f"panel.querySelector({json.dumps(selector)}).click()"


def assert_same(page_image, tensorflow_image):
    page_image = np.asarray(page_image, np.float32)
    assert page_image.shape == tensorflow_image.shape
    assert np.abs(page_image - tensorflow_image).max() <= TOLERANCE


def test_unedited_parses_render_as_in_tensorflow(page, browser):
    index, generator = page
    browser.open(index)
    assert browser.errors() == []
    names = browser.evaluate("[...ParseEditor.editors.keys()]")
    assert sorted(names) == ["image_0", "sample_0"]
    for name in names:
        state = Page(browser, name).run("")
        _, parse = parse_of(generator, os.path.dirname(index), name)
        expected = np.asarray(parse["image"]).reshape(-1)
        assert_same(state["image"], expected)
        # The canvas holds the same picture in 8 bits.
        side = generator.config.image_size
        pixels = np.asarray(browser.evaluate(f"""Array.from(document.querySelector(
            '#image-{name} canvas.render').getContext('2d').getImageData(0, 0, {side},
            {side}).data)""")).reshape(side, side, 4)[..., :3]
        reference = np.round((expected.reshape(side, side, 3) + 1) * 127.5)
        assert np.abs(pixels - reference).max() <= 1


def test_every_edit_kind_renders_as_in_tensorflow(page, browser):
    index, generator = page
    explained = os.path.dirname(index)
    browser.open(index)
    browser.evaluate("location.hash = '#image-image_0'")
    p = Page(browser, "image_0")
    base = np.asarray(p.run("")["image"])
    _, parse = parse_of(generator, explained, "image_0")
    masks = [(np.asarray(t), np.asarray(r).copy())
             for t, r in zip(parse["topk_masks"], parse["relu_masks"])]
    with open(os.path.join(explained, "image_0.json")) as f:
        latent = np.asarray(json.load(f)["latent"], np.float32)[None]

    # 1. Switch a bottom OR node off (frozen masks): Generator.parse with its ReLU mask 0.
    bottom = '.andgrid[data-layer="2"] button.or'
    off = p.edit(p.click(bottom) + ";" + p.click(".nodeview .toggle"))
    (layer, y, x, c, factor), = off["edits"]["scales"]
    assert (layer, factor) == (2, 0)
    masks[1][1][0, y, x, c] = 0.0
    expected = np.asarray(generator.parse(latent, masks=masks)["image"]).reshape(-1)
    assert_same(off["image"], expected)
    assert np.abs(np.asarray(off["image"]) - base).max() > 2 * TOLERANCE
    assert browser.evaluate(f"""(() => {{ const chip = document.querySelector(
        '#image-image_0 {bottom}'); return [chip.classList.contains('off'),
        chip.querySelector('.s').textContent]; }})()""") == [True, "0"]
    assert browser.evaluate("document.querySelectorAll('#image-image_0 .outlines div')"
                            ".length") == 1

    # 2. Scale a top OR node's coefficient by 1.7: the ReLU mask holds the factor.
    top = '.andgrid[data-layer="1"] button.or'
    scaled = p.edit(p.click(top) + "; panel.querySelector('.nodeview .factor').value = "
                    "'1.7';" + p.click(".nodeview .scale"))
    (_, ty, tx, tc, factor), = [e for e in scaled["edits"]["scales"] if e[0] == 1]
    assert factor == pytest.approx(1.7)
    masks[0][1][0, ty, tx, tc] = 1.7
    expected = np.asarray(generator.parse(latent, masks=masks)["image"]).reshape(-1)
    assert_same(scaled["image"], expected)
    assert_same(scaled["image"], tensorflow_render(generator, explained, "image_0",
                                                   scaled["edits"]))

    # 3. Re-run TopK and ReLU below the topmost edit (layer 1).
    rerun = p.edit("const mode = panel.querySelector('.editor .mode'); mode.value = "
                   "'rerun'; mode.dispatchEvent(new Event('change'))")
    assert rerun["edits"]["rerun"] is True
    assert_same(rerun["image"], tensorflow_render(generator, explained, "image_0",
                                                  rerun["edits"]))

    # 4. Swap a top AND node's OR nodes for the grammar sample's.
    swapped = p.edit(p.click('.andgrid[data-layer="1"] button.andnode') + ";"
                     "panel.querySelector('.nodeview .donor').value = 'sample_0';"
                     + p.click(".nodeview .swap"))
    assert swapped["edits"]["swaps"] == [[0, 0, "sample_0"]]
    assert_same(swapped["image"], tensorflow_render(generator, explained, "image_0",
                                                    swapped["edits"]))
    frozen = p.edit("const mode = panel.querySelector('.editor .mode'); mode.value = "
                    "'frozen'; mode.dispatchEvent(new Event('change'))")
    assert_same(frozen["image"], tensorflow_render(generator, explained, "image_0",
                                                   frozen["edits"]))

    # 5. Switch the bottom OR node on again.
    on = p.edit(p.click(bottom) + ";" + p.click(".nodeview .toggle"))
    assert all(e[0] != 2 for e in on["edits"]["scales"])
    assert_same(on["image"], tensorflow_render(generator, explained, "image_0",
                                               on["edits"]))

    # 6. Undo restores the previous parse and image exactly; reset the unedited one.
    undone = p.edit("panel.querySelector('.editor .undo').click()")
    assert undone["edits"] == frozen["edits"] and undone["image"] == frozen["image"]
    assert undone["history"] == on["history"] - 1
    reset = p.edit("panel.querySelector('.editor .reset').click()")
    assert reset["edits"] == {"rerun": False, "scales": [], "swaps": []}
    assert_same(reset["image"], base)
    assert browser.evaluate("document.querySelectorAll('#image-image_0 .outlines div')"
                            ".length") == 0
    assert browser.errors() == []

    # Re-rendering (forward pass and redrawing image, grid, masks, outlines) is
    # interactive: the median edit here takes well under a frame budget.
    assert len(p.times) >= 8
    assert np.median(p.times) < 50, p.times
