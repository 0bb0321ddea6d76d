"""The unit dashboard (dashboard.py): its content, and the page in a real headless Chromium.

The browser is driven over the DevTools protocol on a pipe (--remote-debugging-pipe: JSON
messages ending in NUL on file descriptors 3 and 4), which needs nothing beyond the
standard library. Browser tests skip, with the reason, where no chromium is installed
(Debian: apt-get install chromium); CI installs it (.ci/run).

    python tests/test_dashboard.py PAGE.html OUT.png [FRAGMENT]

takes the same screenshot of any dashboard (docs/dashboard.png is one).
"""

import base64
import json
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pytest

from conftest import FAST_INFERENCE_FLAGS, run_command, tiny_flags, train_ok

# Trains, exports or runs the commands end to end: left out of `pytest -m "not slow"`.
pytestmark = pytest.mark.slow

TINY = tiny_flags(topk=None, train_steps=2)  # train.py's K
EXPLAIN = ["--num_samples=1", "--num_images=1", *FAST_INFERENCE_FLAGS]
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser",
                                               "google-chrome")) if p), None)
needs_browser = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (Debian: "
                                   "apt-get install chromium); .ci/run installs it")


class Chromium:
    """Headless Chromium with one page, driven over the DevTools protocol on a pipe."""

    def __init__(self, binary=CHROMIUM, width=1280, height=900):
        self.profile = tempfile.mkdtemp(prefix="chromium-")
        commands_read, self.commands = os.pipe()
        self.replies, replies_write = os.pipe()

        def wire():  # Chromium reads commands on fd 3 and writes replies on fd 4.
            os.dup2(commands_read, 3)
            os.dup2(replies_write, 4)

        self.process = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu",
             "--remote-debugging-pipe", f"--user-data-dir={self.profile}",
             f"--window-size={width},{height}", "--no-first-run", "about:blank"],
            pass_fds=(3, 4), preexec_fn=wire, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        os.close(commands_read)
        os.close(replies_write)
        self.next_id, self.buffer, self.events, self.session = 0, b"", [], None
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target,
                                 flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                  deviceScaleFactor=1, mobile=False)

    def _receive(self, timeout=120):
        while b"\0" not in self.buffer:
            ready, _, _ = select.select([self.replies], [], [], timeout)
            chunk = os.read(self.replies, 1 << 20) if ready else b""
            if not chunk:
                raise RuntimeError("chromium stopped answering on its DevTools pipe")
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method, **params):
        """Sends one command (to the page once attached) and returns its result."""
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if self.session and not method.startswith("Target."):
            message["sessionId"] = self.session
        os.write(self.commands, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._receive()
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, event):
        while not any(e.get("method") == event for e in self.events):
            self.events.append(self._receive())

    def open(self, path):
        self.events.clear()
        self.call("Page.navigate", url="file://" + os.path.abspath(path))
        self.wait_for("Page.loadEventFired")

    def evaluate(self, expression):
        """The value of a JavaScript expression in the page (JSON-serialisable)."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(result["exceptionDetails"])
        return result["result"].get("value")

    def errors(self):
        """Console errors, uncaught exceptions and failed loads since the last `open`."""
        found = []
        for e in self.events:
            method, params = e.get("method"), e.get("params", {})
            if method == "Runtime.exceptionThrown":
                found.append(params["exceptionDetails"].get("text"))
            elif method == "Runtime.consoleAPICalled" and params["type"] == "error":
                found.append(str(params["args"]))
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                found.append(params["entry"]["text"])
            elif method == "Network.loadingFailed":
                found.append(params.get("errorText"))
        return found

    def requested_urls(self):
        return [e["params"]["request"]["url"] for e in self.events
                if e.get("method") == "Network.requestWillBeSent"]

    def screenshot(self, path):
        data = self.call("Page.captureScreenshot", format="png",
                         captureBeyondViewport=False)["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))

    def close(self):
        try:
            self.call("Browser.close")
        except RuntimeError:
            pass
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        os.close(self.commands)
        os.close(self.replies)
        shutil.rmtree(self.profile, ignore_errors=True)


def train_and_explain(path, *extra):
    train_ok(path, *TINY, *extra, timeout=400)
    result = run_command("-m", "sparse_gen_tf.commands.explain", f"--workdir={path}", *EXPLAIN,
                         timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    return os.path.join(path, "explain", "index.html")


def restored(workdir):
    """(AlternatingBackprop, TrainConfig) of workdir's checkpoint, restored here with
    tf.train.Checkpoint rather than through the commands' loader. The checkpoint reaches
    the generator's weights through the optimizer's (training/run.py, checkpoint_for),
    so the model is built and compiled as training builds it."""
    from sparse_gen_tf.training.run import (build_model, chains_in_checkpoint,
                                            checkpoint_for, latest_checkpoint, read_config)
    config = read_config(workdir)
    path = latest_checkpoint(workdir)
    model = build_model(config, chains_in_checkpoint(path))
    checkpoint_for(model)[0].restore(path).expect_partial()
    return model, config


def units_in_use(workdir):
    """Per layer, the channels with an activation > 0 in some training parse, computed
    here from the checkpoint without the dashboard's code."""
    model, _ = restored(workdir)
    activations = model.generator.parse(model.chains.value)["activations"]
    return [set(np.flatnonzero((np.asarray(a) > 0).any((0, 1, 2)))) for a in activations]


@pytest.fixture(scope="module")
def sparse_page(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("dashboard") / "run")
    return path, train_and_explain(path, "--topk=4,8")


@pytest.fixture(scope="module")
def dense_page(tmp_path_factory):
    # K = size: 2x2x8 = 32 top and 4x4x8 = 128 bottom OR nodes in every parse.
    path = str(tmp_path_factory.mktemp("dashboard") / "dense")
    return path, train_and_explain(path, "--topk=32,128")


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium)")
    chromium = Chromium()
    yield chromium
    chromium.close()


def test_page_needs_no_network(sparse_page):
    with open(sparse_page[1]) as f:
        page = f.read()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "<link" not in page and "@import" not in page
    assert page.count('<section class="panel imagepanel"') == 2  # 1 sample, 1 image


def test_one_unit_panel_per_unit_in_use(sparse_page):
    workdir, index = sparse_page
    with open(index) as f:
        page = f.read()
    in_use = units_in_use(workdir)
    panels = set(re.findall(r'<section class="panel unitpanel" id="unit-(\d+)-(\d+)"',
                            page))
    assert panels == {(str(l), str(c)) for l, used in enumerate(in_use, 1) for c in used}
    # The glance grid links every unit in use and shows the others as dead.
    links = set(re.findall(r'<a class="unit" href="#unit-(\d+)-(\d+)" data-unit', page))
    assert panels <= links
    assert page.count('class="unit dead"') == 16 - sum(len(u) for u in in_use)


def test_dense_run_caps_what_it_shows_and_says_so(dense_page):
    from sparse_gen_tf.explanation.parse_graph import ParseGraph
    explained = os.path.dirname(dense_page[1])
    with open(dense_page[1]) as f:
        page = f.read()
    for name in ("sample_0", "image_0"):
        with open(os.path.join(explained, f"{name}.json")) as f:
            graph = ParseGraph.from_json(f.read())
        panel = page.split(f'id="image-{name}"')[1].split("</section>")[0]
        for layer, text in zip(graph.layers, panel.split("<h3>Layer ")[1:]):
            total = sum(len(a.or_nodes) for a in layer.and_nodes)
            # Every AND node is drawn; of the OR nodes only the 48 largest of the layer.
            assert text.count('<button class="andnode"') == layer.shape[0] * layer.shape[1]
            assert text.count('<button class="or"') == min(total, 48)
            assert (f"Showing 48 of {total} OR nodes" in text) == (total > 48)
        # K = size: ReLU alone leaves dozens of bottom OR nodes, more than the cap.
        assert sum(len(a.or_nodes) for a in graph.layers[1].and_nodes) > 48
    assert os.path.getsize(dense_page[1]) < 5 << 20


def test_unit_panels_are_capped_per_layer(sparse_page):
    """write_dashboard(max_units=2) keeps the two most used units of each layer."""
    from sparse_gen_tf.reports import dashboard
    workdir, _ = sparse_page
    model, config = restored(workdir)
    out = tempfile.mkdtemp()
    with open(dashboard.write_dashboard(model, config, out, {}, max_units=2)) as f:
        page = f.read()
    assert len(re.findall(r'<section class="panel unitpanel" id="unit-1-', page)) == 2
    assert len(re.findall(r'<section class="panel unitpanel" id="unit-2-', page)) == 2
    assert page.count("unit panels of layer") == sum(len(u) > 2 for u in units_in_use(
        workdir))


@needs_browser
def test_page_loads_without_console_errors_and_offline(sparse_page, browser):
    browser.open(sparse_page[1])
    assert browser.errors() == []
    urls = browser.requested_urls()
    assert urls and all(u.startswith(("file:", "data:")) for u in urls), urls
    assert browser.evaluate("document.querySelectorAll('#model .layer').length") == 2


@needs_browser
def test_click_on_a_unit_shows_its_panel(sparse_page, browser, tmp_path):
    browser.open(sparse_page[1])
    clicked = browser.evaluate("""(() => {
        const link = document.querySelectorAll('#model a.unit')[1];
        link.click();
        return link.dataset.unit; })()""")
    shown = browser.evaluate("""[...document.querySelectorAll('section.panel')]
        .filter(s => !s.hidden).map(s => s.id)""")
    assert shown == [clicked]
    # The panel holds its raw and normalised basis function and its examples.
    assert browser.evaluate(f"document.getElementById('{clicked}')"
                            ".querySelectorAll('img').length") >= 3
    browser.screenshot(str(tmp_path / "unit.png"))
    assert_real_screenshot(tmp_path / "unit.png")
    assert browser.errors() == []


@needs_browser
def test_click_on_an_or_node_shows_its_basis_and_outlines_its_region(sparse_page, browser,
                                                                      tmp_path):
    browser.open(sparse_page[1])
    browser.evaluate("document.querySelector('a.imagelink[href=\"#image-image_0\"]')"
                     ".click()")
    node = browser.evaluate("""(() => {
        const page = document.getElementById('image-image_0');
        const node = page.querySelectorAll('button.or')[0];
        node.click();
        const box = page.querySelector('.highlight');
        return {unit: node.dataset.unit, box: node.dataset.box, shown: !page.hidden,
                view: page.querySelector('.nodeview').textContent,
                pictures: page.querySelectorAll('.nodeview img').length,
                outline: [box.style.display, box.style.width, box.style.top]}; })()""")
    assert node["shown"] and node["pictures"] == 1
    assert f"unit {node['unit']}," in node["view"]
    y0, x0, y1, x1 = map(int, node["box"].split(","))
    assert node["outline"] == ["block", f"{100 * (x1 - x0) / 32:g}%", f"{100 * y0 / 32:g}%"]
    browser.screenshot(str(tmp_path / "parse.png"))
    assert_real_screenshot(tmp_path / "parse.png")


def assert_real_screenshot(path):
    import tensorflow as tf
    shot = tf.io.decode_png(tf.io.read_file(str(path))).numpy()
    assert shot.shape[:2] == (900, 1280)
    assert len(np.unique(shot.reshape(-1, shot.shape[-1]), axis=0)) > 50  # not blank


if __name__ == "__main__":
    page, out = sys.argv[1], sys.argv[2]
    chromium = Chromium()
    try:
        chromium.open(page)
        if len(sys.argv) > 3:
            chromium.evaluate(f"location.hash = '{sys.argv[3]}'")
        chromium.screenshot(out)
        print("errors:", chromium.errors())
    finally:
        chromium.close()
