// The generator's forward pass, g of model/generator.py, in the page.
//
//   z [d] -> FC -> reshape [s, s, c_1]                                            fm^1
//   per sparse layer i: TopK(K_i) over all h*w*c entries -> ReLU                  fm^i_s
//                       -> 'same' transposed conv (stride s_i) + bias             fm^(i+1)
//   the last conv paints the image: tanh
//
// Tensors are Float32Array, row-major [h, w, c] (one example); sums run in float64 and
// are stored as float32, as close to TensorFlow's float32 as the order of sums allows.
// The weights come from editor.py's model_data (float32, little-endian, base64).
'use strict';

const SparseGenerator = (() => {
  function decode(text) {
    const bytes = Uint8Array.from(atob(text), (ch) => ch.charCodeAt(0));
    return new Float32Array(bytes.buffer);
  }

  class Generator {
    constructor(data) {
      this.config = data;
      this.shapes = data.shapes;            // [[h, w, c]] per sparse layer, top first
      this.fcKernel = decode(data.fc.kernel);  // [d, s*s*c_1]
      this.fcBias = decode(data.fc.bias);
      this.deconvs = data.deconvs.map((d, i) => ({
        kernel: decode(d.kernel),           // [c_in, k, k, c_out]: row j is unit j's patch
        bias: decode(d.bias),
        size: data.kernel_sizes[i], stride: data.strides[i],
      }));
    }

    get numLayers() { return this.shapes.length; }

    // fm^1 = reshape(FC(z)): z [d] -> [s*s*c_1].
    topFeatureMap(z) {
      const n = this.fcBias.length, d = z.length, out = new Float32Array(n);
      for (let j = 0; j < n; j++) {
        let sum = 0;
        for (let i = 0; i < d; i++) sum += z[i] * this.fcKernel[i * n + j];
        out[j] = sum + this.fcBias[j];
      }
      return out;
    }

    // mask_T * mask_R of Eq. (1-2) as 0/1 [h*w*c]: the K largest entries of the whole map
    // (ties to the lower flat index, as layers.TopK), of those the positive ones.
    orNodes(fm, k) {
      const n = fm.length, keep = new Uint8Array(n);
      if (k >= n) {
        for (let j = 0; j < n; j++) keep[j] = fm[j] > 0 ? 1 : 0;
        return keep;
      }
      // The K-th largest value by a native numeric sort of a copy, then every entry above
      // it and, of the entries equal to it, the first ones in flat order until K are kept.
      const threshold = Float32Array.from(fm).sort()[n - k];
      let ties = k;
      for (let j = 0; j < n; j++) if (fm[j] > threshold) ties--;
      for (let j = 0; j < n; j++) {
        const kept = fm[j] > threshold || (fm[j] === threshold && ties-- > 0);
        if (kept && fm[j] > 0) keep[j] = 1;
      }
      return keep;
    }

    // Transposed conv i on a sparse activation [h*w*c_in]: out[y*s + p - pad] +=
    // a[y] * ker[p] for every non-zero a, pad = (k - s) // 2 ('same'), then + bias.
    deconv(i, activation) {
      const {kernel, bias, size: k, stride: s} = this.deconvs[i];
      const [h, w, cIn] = this.shapes[i];
      const cOut = bias.length, H = h * s, W = w * s, pad = Math.floor((k - s) / 2);
      const sums = new Float64Array(H * W * cOut);
      for (let j = 0; j < activation.length; j++) {
        const a = activation[j];
        if (a === 0) continue;
        const c = j % cIn, x = Math.floor(j / cIn) % w, y = Math.floor(j / (cIn * w));
        for (let py = 0; py < k; py++) {
          const oy = y * s + py - pad;
          if (oy < 0 || oy >= H) continue;
          for (let px = 0; px < k; px++) {
            const ox = x * s + px - pad;
            if (ox < 0 || ox >= W) continue;
            const from = ((c * k + py) * k + px) * cOut, to = (oy * W + ox) * cOut;
            for (let o = 0; o < cOut; o++) sums[to + o] += a * kernel[from + o];
          }
        }
      }
      const out = new Float32Array(sums.length);
      for (let j = 0; j < out.length; j++) out[j] = sums[j] + bias[j % cOut];
      return out;
    }

    // The parse of top = fm^1 [s*s*c_1] under edits (editor.py's edited_parse):
    //   orNodes: per layer, the unedited parse's 0/1 mask_T * mask_R;
    //   scales: per layer, Map flat index -> factor on that OR node's coefficient;
    //   swaps: Map flat index of a top AND node (y*w + x) -> Float32Array [c_1], the
    //          coefficients of the OR nodes it holds instead of its own;
    //   rerun: layers below the topmost edited one recompute TopK and ReLU.
    // Returns {image [H*W*3] in [-1, 1], activations, masks} (per layer, top first).
    render(top, orNodes, scales, swaps, rerun) {
      let first = swaps.size ? 1 : null;
      scales.forEach((map, i) => {
        if (map.size && (first === null || i + 1 < first)) first = i + 1;
      });
      let fm = top;
      const activations = [], masks = [];
      for (let i = 0; i < this.numLayers; i++) {
        const mask = rerun && first !== null && i + 1 > first
          ? this.orNodes(fm, this.config.topk[i]) : orNodes[i];
        const activation = new Float32Array(fm.length);
        for (let j = 0; j < fm.length; j++) if (mask[j]) activation[j] = fm[j];
        if (i === 0) {
          const c = this.shapes[0][2];
          swaps.forEach((coefficients, cell) => activation.set(coefficients, cell * c));
        }
        scales[i].forEach((factor, j) => { activation[j] *= factor; });
        activations.push(activation);
        masks.push(mask);
        fm = this.deconv(i, activation);
      }
      const image = fm.map(Math.tanh);
      return {image, activations, masks};
    }
  }
  return {Generator, decode};
})();
