// The parse editor of each editable parse panel (templates/index.html.j2, editor.py).
//
// Edits: switch an OR node off and on, scale its coefficient, swap a top AND node's OR
// nodes for another parse's (its fm^1_s at the same AND node), choose how the layers
// below an edit respond (frozen masks, or TopK and ReLU run again), undo, reset. After
// every edit the parse is rendered again (generator.js) and the image, the parse grid's
// coefficients, the OR-node masks and the outlines of the edited nodes are redrawn.
//
// window.ParseEditor.editors.get(name) is the editor of parse `name`; tests drive the
// page through the buttons and read `image()`, `state()` and `lastRenderMs` from it.
'use strict';

const ParseEditor = (() => {
  const dataElement = document.getElementById('generator-data');
  const editors = new Map();
  if (!dataElement) return {editors, nodeControls() {}};
  const generator = new SparseGenerator.Generator(JSON.parse(dataElement.textContent));
  const [s1, w1, c1] = [generator.shapes[0][0], generator.shapes[0][1], generator.shapes[0][2]];

  function fmt(value) { return String(Number(Number(value).toPrecision(3))); }

  class Editor {
    constructor(panel, data) {
      this.panel = panel;
      this.name = data.name;
      this.top = data.z === null ? SparseGenerator.decode(data.top)
        : generator.topFeatureMap(SparseGenerator.decode(data.z));
      this.orNodes = data.or_nodes.map((indices, i) => {
        const [h, w, c] = generator.shapes[i], mask = new Uint8Array(h * w * c);
        for (const j of indices) mask[j] = 1;
        return mask;
      });
      this.base = generator.render(this.top, this.orNodes,
                                   this.orNodes.map(() => new Map()), new Map(), false);
      this.history = [];
      this.state = {rerun: false, scales: this.orNodes.map(() => new Map()),
                    swaps: new Map()};
      this.lastRenderMs = null;
      const bar = panel.querySelector('.editor');
      bar.querySelector('.mode').addEventListener('change', (event) => this.edit((state) => {
        state.rerun = event.target.value === 'rerun';
      }));
      bar.querySelector('.undo').addEventListener('click', () => this.undo());
      bar.querySelector('.reset').addEventListener('click', () => this.edit((state) => {
        state.scales.forEach((map) => map.clear());
        state.swaps.clear();
      }));
    }

    copy(state) {
      return {rerun: state.rerun, scales: state.scales.map((map) => new Map(map)),
              swaps: new Map(state.swaps)};
    }

    // Applies change(state) to a copy of the state, remembers the old one, re-renders.
    edit(change) {
      this.history.push(this.copy(this.state));
      const next = this.copy(this.state);
      change(next);
      this.state = next;
      this.refresh();
    }

    undo() {
      if (!this.history.length) return;
      this.state = this.history.pop();
      this.refresh();
    }

    scale(layer, y, x, unit) {
      const [, w, c] = generator.shapes[layer - 1];
      const j = (y * w + x) * c + unit, factor = this.state.scales[layer - 1].get(j);
      return factor === undefined ? 1 : factor;
    }

    setScale(layer, y, x, unit, factor) {
      const [, w, c] = generator.shapes[layer - 1];
      this.edit((state) => {
        const j = (y * w + x) * c + unit;
        if (factor === 1) state.scales[layer - 1].delete(j);
        else state.scales[layer - 1].set(j, factor);
      });
    }

    toggle(layer, y, x, unit) {
      this.setScale(layer, y, x, unit, this.scale(layer, y, x, unit) === 0 ? 1 : 0);
    }

    swap(y, x, donor) {
      this.edit((state) => {
        if (donor === this.name) state.swaps.delete(y * w1 + x);
        else state.swaps.set(y * w1 + x, donor);
      });
    }

    // The top AND node (y, x)'s OR nodes in parse `name`: Float32Array [c_1].
    donorCoefficients(name, cell) {
      return editors.get(name).base.activations[0].slice(cell * c1, (cell + 1) * c1);
    }

    render() {
      const swaps = new Map([...this.state.swaps].map(
        ([cell, donor]) => [cell, this.donorCoefficients(donor, cell)]));
      return generator.render(this.top, this.orNodes, this.state.scales, swaps,
                              this.state.rerun);
    }

    refresh() {
      const start = performance.now();
      this.current = this.render();
      this.draw();
      this.lastRenderMs = performance.now() - start;
      const edits = this.state.scales.reduce((n, map) => n + map.size, 0)
        + this.state.swaps.size;
      this.panel.querySelector('.editor .status').textContent =
        `${edits} edited node(s), ${this.history.length} step(s) to undo; rendered in ` +
        `${this.lastRenderMs.toFixed(1)} ms`;
      this.panel.querySelector('.editor .mode').value = this.state.rerun ? 'rerun' : 'frozen';
      const selected = this.panel.querySelector('button.selected');
      if (selected) selected.click();  // the node view shows the new coefficient
    }

    draw() {
      const {image, activations, masks} = this.current;
      const side = generator.config.image_size;
      const canvas = this.panel.querySelector('canvas.render');
      const context = canvas.getContext('2d'), pixels = context.createImageData(side, side);
      for (let p = 0; p < side * side; p++) {
        for (let ch = 0; ch < 3; ch++) {
          pixels.data[4 * p + ch] = Math.round((image[3 * p + ch] + 1) * 127.5);
        }
        pixels.data[4 * p + 3] = 255;
      }
      context.putImageData(pixels, 0, 0);
      this.drawGrid(activations);
      this.drawMasks(masks, activations);
      this.drawOutlines();
    }

    // The parse grid: each OR node's coefficient now; struck out when it is 0; the OR
    // nodes that the edit adds (not in the unedited parse) as extra buttons.
    drawGrid(activations) {
      if (!this.cells) {  // the grid's elements, found once
        this.cells = [...this.panel.querySelectorAll('.andgrid .and')].map((cell) => ({
          i: Number(cell.closest('.andgrid').dataset.layer) - 1,
          y: Number(cell.dataset.y), x: Number(cell.dataset.x),
          holder: cell.querySelector('.added'),
          chips: [...cell.querySelectorAll(':scope > button.or')].map((chip) => ({
            chip, unit: Number(chip.dataset.unit), text: chip.querySelector('.s')})),
        }));
      }
      for (const {i, y, x, holder, chips} of this.cells) {
        const [, w, c] = generator.shapes[i];
        const activation = activations[i], scales = this.state.scales[i];
        const origin = (y * w + x) * c, shown = new Set();
        for (const {chip, unit, text} of chips) {
          const j = origin + unit, label = fmt(activation[j]);
          shown.add(unit);
          if (text.textContent !== label) text.textContent = label;
          chip.classList.toggle('off', activation[j] === 0);
          chip.classList.toggle('scaled', scales.has(j) && scales.get(j) !== 0);
        }
        const added = [];
        for (let unit = 0; unit < c; unit++) {
          const j = origin + unit;
          if (shown.has(unit)) continue;
          if ((activation[j] !== 0 && !this.orNodes[i][j]) || scales.has(j)) added.push(unit);
        }
        added.sort((a, b) => activation[origin + b] - activation[origin + a]);
        // Rebuilt only when it changes: most edits touch a few AND nodes.
        const key = added.map((unit) => `${unit}:${activation[origin + unit]}`).join();
        if (holder.dataset.key === key) continue;
        holder.dataset.key = key;
        const box = generator.config.boxes[i][y * w + x].join(',');
        holder.replaceChildren(...added.map((unit) => {
          const chip = document.createElement('button');
          chip.className = 'or added';
          Object.assign(chip.dataset, {box, unit, layer: i + 1, y, x});
          chip.textContent = `u${unit} ${fmt(activation[origin + unit])}`;
          chip.classList.toggle('off', activation[origin + unit] === 0);
          return chip;
        }));
      }
    }

    // Per layer, the OR nodes as one row per AND node, one column per unit: grey kept,
    // red removed by the edit, blue added by it, orange scaled.
    drawMasks(masks, activations) {
      const holder = this.panel.querySelector('.editor .masks');
      if (!holder.children.length) {
        holder.replaceChildren(...generator.shapes.map(([h, w, c], i) => {
          const figure = document.createElement('figure');
          figure.innerHTML = `<canvas width="${c}" height="${h * w}"></canvas>` +
            `<figcaption>layer ${i + 1} OR nodes: ${h * w} AND nodes x ${c} units</figcaption>`;
          return figure;
        }));
      }
      holder.querySelectorAll('canvas').forEach((canvas, i) => {
        const context = canvas.getContext('2d');
        const pixels = context.createImageData(canvas.width, canvas.height);
        const base = this.orNodes[i], now = activations[i], scales = this.state.scales[i];
        for (let j = 0; j < base.length; j++) {
          let colour = [255, 255, 255];
          if (base[j] && now[j] === 0) colour = [220, 30, 30];
          else if (!base[j] && now[j] !== 0) colour = [30, 90, 230];
          else if (now[j] !== 0 && scales.has(j)) colour = [255, 140, 0];
          else if (now[j] !== 0) colour = [60, 60, 60];
          pixels.data[4 * j] = colour[0];
          pixels.data[4 * j + 1] = colour[1];
          pixels.data[4 * j + 2] = colour[2];
          pixels.data[4 * j + 3] = 255;
        }
        context.putImageData(pixels, 0, 0);
      });
    }

    drawOutlines() {
      const boxes = new Map();
      this.state.scales.forEach((map, i) => {
        const [, w, c] = generator.shapes[i];
        for (const j of map.keys()) {
          boxes.set(generator.config.boxes[i][Math.floor(j / c)].join(','), '');
        }
      });
      for (const cell of this.state.swaps.keys()) {
        boxes.set(generator.config.boxes[0][cell].join(','), 'swap');
      }
      const side = generator.config.image_size;
      this.panel.querySelector('.outlines').replaceChildren(...[...boxes].map(
        ([box, kind]) => {
          const outline = document.createElement('div');
          outline.className = kind;
          place(outline, box, side);
          return outline;
        }));
    }

    // The edited parse, for tests: the image [H*W*3] (tanh, before the 8-bit canvas),
    // and the edits as {rerun, scales: [[layer, y, x, unit, factor]], swaps: [[y, x,
    // donor]]}.
    image() { return Array.from(this.current.image); }

    edits() {
      const scales = [];
      this.state.scales.forEach((map, i) => {
        const [, w, c] = generator.shapes[i];
        map.forEach((factor, j) => scales.push(
          [i + 1, Math.floor(j / (w * c)), Math.floor(j / c) % w, j % c, factor]));
      });
      return {rerun: this.state.rerun, scales,
              swaps: [...this.state.swaps].map(([cell, donor]) => [
                Math.floor(cell / w1), cell % w1, donor])};
    }
  }

  // The edit controls of the clicked node, under its description in the node view.
  function nodeControls(panel, node, view) {
    const editor = editors.get(panel.id.replace(/^image-/, ''));
    if (!editor) return;
    const layer = Number(node.dataset.layer), y = Number(node.dataset.y);
    const x = Number(node.dataset.x);
    const controls = document.createElement('div');
    controls.className = 'edit';
    if (node.classList.contains('or')) {
      const unit = Number(node.dataset.unit), factor = editor.scale(layer, y, x, unit);
      const [, w, c] = generator.shapes[layer - 1];
      const now = editor.current.activations[layer - 1][(y * w + x) * c + unit];
      controls.innerHTML = `Edit: s now ${fmt(now)} (x${fmt(factor)}). ` +
        `<button type="button" class="toggle">${factor === 0 ? 'Switch on' : 'Switch off'}` +
        `</button> <label>x <input class="factor" type="number" step="0.1" ` +
        `value="${factor === 0 ? 1 : factor}"></label> <button type="button" ` +
        `class="scale">Scale</button>`;
      controls.querySelector('.toggle').addEventListener(
        'click', () => editor.toggle(layer, y, x, unit));
      controls.querySelector('.scale').addEventListener('click', () => editor.setScale(
        layer, y, x, unit, Number(controls.querySelector('.factor').value)));
    } else if (layer === 1 && editors.size > 1) {
      const cell = y * w1 + x, own = editor.state.swaps.get(cell) || editor.name;
      const options = [...editors.keys()].map((name) => {
        const coefficients = editor.donorCoefficients(name, cell);
        const units = [...coefficients.keys()].filter((u) => coefficients[u] !== 0)
          .map((u) => `u${u} ${fmt(coefficients[u])}`).join(', ');
        return `<option value="${name}"${name === own ? ' selected' : ''}>${name}` +
          `${name === editor.name ? ' (own)' : ''}: ${units || 'no OR nodes'}</option>`;
      });
      controls.innerHTML = `Swap this AND node's OR nodes for those of <select ` +
        `class="donor">${options.join('')}</select> <button type="button" ` +
        `class="swap">Swap</button>`;
      controls.querySelector('.swap').addEventListener('click', () => editor.swap(
        y, x, controls.querySelector('.donor').value));
    } else {
      return;
    }
    view.append(controls);
  }

  for (const element of document.querySelectorAll('.editor .parse-data')) {
    const panel = element.closest('section.panel');
    editors.set(panel.id.replace(/^image-/, ''),
                new Editor(panel, JSON.parse(element.textContent)));
  }
  for (const editor of editors.values()) editor.refresh();
  return {editors, nodeControls, generator};
})();
window.ParseEditor = ParseEditor;
