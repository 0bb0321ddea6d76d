"""The dashboard's style sheet and script, inlined into index.html (dashboard.py).

The script routes on the URL's fragment, so that every unit and parse has an address
(index.html#unit-2-5) that works from file:// with no server: a click on a link changes
the fragment, and `hashchange` shows that one panel. A click on an AND or OR node of a
parse copies the node's <template> into the parse's node view and outlines the node's
pixel box (data-box = y0,x0,y1,x1, end exclusive) on the image, in percent of its side.
"""

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1em 2em; color: #222;
  display: grid; grid-template-columns: minmax(300px, 36%) 1fr; gap: 0 2em; }
body > h1, body > p { grid-column: 1 / 3; margin: 0.2em 0; }
#model { max-height: calc(100vh - 6em); overflow-y: auto; }
img.pic { image-rendering: pixelated; border: 1px solid #ccc; }
.kernels { display: flex; flex-wrap: wrap; gap: 3px; }
.unit.dead img { opacity: 0.25; }
.row { display: flex; flex-wrap: wrap; gap: 1.5em; align-items: flex-start; }
figure { margin: 0; } figcaption { font-size: 12px; color: #555; max-width: 300px; }
table.heat { border-collapse: collapse; } table.heat td { width: 26px; height: 26px;
  border: 1px solid #ddd; text-align: center; font-size: 10px; }
svg.hist rect { fill: #c82828; } svg.hist text { font-size: 10px; fill: #555; }
.cap { color: #a35c00; font-style: italic; }
.panel h2 { margin-top: 0.4em; }
.canvas { position: relative; line-height: 0; }
.highlight { position: absolute; display: none; outline: 2px solid #ff0;
  box-shadow: 0 0 0 2px #000; pointer-events: none; }
.nodeview { min-width: 300px; max-width: 420px; }
.andgrid { display: grid; gap: 4px; }
.and { border: 1px solid #bbb; padding: 3px; background: #f6f6f6; }
button { font: 11px monospace; margin: 1px; cursor: pointer; }
button.andnode { font-weight: bold; display: block; }
button.selected { background: #ff0; }
.more { font-size: 11px; color: #a35c00; }
a.imagelink { margin-right: 0.6em; }
"""

SCRIPT = """
function show(id) {
  for (const panel of document.querySelectorAll('section.panel')) {
    panel.hidden = panel.id !== id;
  }
}
window.addEventListener('hashchange', () => show(location.hash.slice(1)));
show(location.hash.slice(1));
document.addEventListener('click', (event) => {
  const node = event.target.closest('button[data-box]');
  if (!node) return;
  const page = node.closest('section.panel');
  const side = page.querySelector('.canvas img').naturalWidth;
  const [y0, x0, y1, x1] = node.dataset.box.split(',').map(Number);
  const box = page.querySelector('.highlight');
  box.style.display = 'block';
  box.style.top = (100 * y0 / side) + '%';
  box.style.left = (100 * x0 / side) + '%';
  box.style.height = (100 * (y1 - y0) / side) + '%';
  box.style.width = (100 * (x1 - x0) / side) + '%';
  for (const other of page.querySelectorAll('button.selected')) {
    other.classList.remove('selected');
  }
  node.classList.add('selected');
  const view = page.querySelector('.nodeview');
  view.replaceChildren(node.querySelector('template').content.cloneNode(true));
});
"""
