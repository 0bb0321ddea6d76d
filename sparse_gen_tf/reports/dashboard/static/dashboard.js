// The dashboard's routing and node views (templates/index.html.j2 inlines it).
//
// The script routes on the URL's fragment, so that every unit and parse has an address
// (index.html#unit-2-5) that works from file:// with no server: a click on a link changes
// the fragment, and `hashchange` shows that one panel. A click on an AND or OR node of a
// parse copies the node's <template> into the parse's node view and outlines the node's
// pixel box (data-box = y0,x0,y1,x1, end exclusive) on the image, in percent of its side.
// In an editable parse the node view also gets the node's edit controls (editor.js).
'use strict';

function show(id) {
  for (const panel of document.querySelectorAll('section.panel')) {
    panel.hidden = panel.id !== id;
  }
}
window.addEventListener('hashchange', () => show(location.hash.slice(1)));
show(location.hash.slice(1));

function place(element, boxText, side) {
  const [y0, x0, y1, x1] = boxText.split(',').map(Number);
  element.style.top = (100 * y0 / side) + '%';
  element.style.left = (100 * x0 / side) + '%';
  element.style.height = (100 * (y1 - y0) / side) + '%';
  element.style.width = (100 * (x1 - x0) / side) + '%';
}

document.addEventListener('click', (event) => {
  const node = event.target.closest('button[data-box]');
  if (!node) return;
  const page = node.closest('section.panel');
  const box = page.querySelector('.highlight');
  box.style.display = 'block';
  place(box, node.dataset.box, Number(page.dataset.side));
  for (const other of page.querySelectorAll('button.selected')) {
    other.classList.remove('selected');
  }
  node.classList.add('selected');
  const view = page.querySelector('.nodeview');
  const template = node.querySelector('template');
  if (template) {
    view.replaceChildren(template.content.cloneNode(true));
  } else {  // an OR node that an edit brought in (editor.js)
    const text = document.createElement('p');
    text.textContent = `Layer ${node.dataset.layer}, AND (${node.dataset.y}, ` +
      `${node.dataset.x}), OR node: unit ${node.dataset.unit}, brought in by the edits.`;
    view.replaceChildren(text);
  }
  if (window.ParseEditor) window.ParseEditor.nodeControls(page, node, view);
});
