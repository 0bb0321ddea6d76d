"""The unit dashboard: one offline HTML page that explains a trained generator.

`write_dashboard` writes OUTPUT_DIR/index.html, with every picture inlined as a data URL
and no script or style from the network, so it opens from file:// anywhere. The page is
the Jinja2 template templates/index.html.j2 with the style sheet and scripts of static/
inlined. Sections:

  #model           per sparse layer: K, units in use, dead units, and the kernel grid
                   (each unit's basis function, normalised per kernel; a click opens it)
  #unit-<l>-<c>    one panel per unit in use (channel c of sparse layer l, 1 = top): its
                   basis function B_j raw and normalised (Eq. 6), where it fires over the
                   AND-node grid, how often it survives TopK and ReLU, a histogram of its
                   coefficient s_j, the training images where s_j is largest beside the
                   same parse with that one OR node removed, for every layer above the
                   bottom its decomposition into the OR nodes of the next layer (Eq. 2-3),
                   and the attributes it detects, if `evaluate --attributes` dissected
                   this checkpoint (dissection.py: "unit 46 @ (1, 2): Eyeglasses, AUC
                   0.91", the AUC on held-out faces); the layer's row lists them too
  #image-<name>    one panel per explained parse: the And-Or parse graph as clickable
                   grids of AND nodes holding their OR nodes; a click on a node shows its
                   basis function and outlines its region of the image; and the parse
                   editor: switch OR nodes off and on, scale their coefficients, swap a
                   top AND node's OR nodes for another parse's, undo, reset, with the
                   image re-rendered in the page by the generator's own forward pass
                   (editor.py, static/generator.js)

The statistics come from the parses of the training images by their persistent chains
z_i (statistics.py). Removing an OR node is exact in the parse graph's terms: the parse's
TopK and ReLU masks are frozen (`Generator.parse(z, masks=...)`) and the one entry's ReLU
mask is set to 0, so the rest of the graph stays as it was and the image changes by that
node's term.

A dense run (K = size) has thousands of OR nodes; the page then shows at most
`max_units` units per layer and `max_or_nodes` OR nodes per layer of a parse, the ones
used most or with the largest coefficients, and says so where it does.
"""

from sparse_gen_tf.reports.dashboard.page import write_dashboard

__all__ = ["write_dashboard"]
