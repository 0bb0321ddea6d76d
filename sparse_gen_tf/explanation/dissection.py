"""Network dissection (Bau et al., 2017) of the parse: does one unit detect an attribute?

The paper's claim is that sparse units are parts: an eye unit, a mouth unit. On labelled
faces (CelebA's attributes, `data/attributes.py`) that claim has a number: how well the
single best unit detects a localised attribute (Eyeglasses, Smiling, Mustache, ...).

Units. In sparse layer i (1 = top) with feature map [h, w, c], a unit is one channel at
one cell (AND node): its coefficient fm^i_s[y, x, c] in a face's parse, after TopK and
ReLU (Eq. 1), 0 where the parse does not use it. A layer has h*w*c units. The baseline of
the code's size is pixel PCA: d components (d = the generator's latent_dim) fitted on the
training images, a unit being a held-out face's coefficient on one component.

Protocol. The M held-out faces split into two fixed halves A and B (`halves`, seeded), the
same for every run scored on the same faces. For each attribute:

  continuous: every unit's ROC AUC on A (`roc_auc`: rank-based, ties averaged, so a
    constant unit, as most sparse units nearly are, scores 0.5). A unit detects either
    by firing (AUC > 0.5) or by staying silent (AUC < 0.5: a beard unit for No_Beard);
    its strength is |AUC - 0.5|. The strongest unit and its direction are chosen on A,
    and its AUC on B in that direction (1 - AUC_B for a silent detector) is reported.
    Picking the best of thousands of units on A is then not rewarded on B.
  sparsity-matched: every unit binarised at the same firing rate, `FIRING_RATE` = 1/16:
    it fires on a face when its value exceeds its threshold, the largest value that at
    most that fraction of A's faces exceed (`firing_thresholds`; a unit that is non-zero
    on fewer faces fires on those, a constant one never). Its balanced accuracy, (TPR +
    TNR) / 2, direction and unit chosen on A as above, is reported on B. A dense code is
    then not credited for graded values that no single unit's firing carries. A PCA
    coefficient has no sign of its own, so each component enters as +c and -c, each
    binarised at its own top 1/16.

An attribute is scored only when both halves have faces with it and faces without it;
the others are listed as skipped. The summary is the mean over the scored attributes of
the AUC and of the balanced accuracy on B, per layer and for PCA.
"""

import json
import os

from absl import logging
import numpy as np

from sparse_gen_tf.errors import UserError
from sparse_gen_tf.explanation.pixel_pca import pca_coefficients, pixel_pca

# Attributes with a place on the aligned face (Bau et al. dissect parts, not global
# properties such as Attractive or Young).
DEFAULT_ATTRIBUTES = ("Eyeglasses", "Smiling", "Mouth_Slightly_Open", "Bangs",
                      "Wearing_Hat", "Mustache", "No_Beard", "Wearing_Lipstick", "Bald",
                      "Goatee", "Heavy_Makeup", "Narrow_Eyes", "Big_Nose", "Pointy_Nose")
FIRING_RATE = 1 / 16  # one cell in 16: the paper's faces keep 128 of 2048 bottom units
HALVES_SEED = 0


# === Scores of every unit at once ===

def average_ranks(scores):
    """Ranks 1..n of each column of scores [n, U], tied values sharing their mean rank."""
    scores = np.asarray(scores, np.float64)
    n = len(scores)
    order = np.argsort(scores, axis=0, kind="stable")
    ordered = np.take_along_axis(scores, order, axis=0)
    index = np.broadcast_to(np.arange(n)[:, None], ordered.shape)
    differs = ordered[1:] != ordered[:-1]  # [n-1, U]: a new group starts below
    ones = np.ones((1, ordered.shape[1]), bool)
    starts = np.concatenate([ones, differs])
    ends = np.concatenate([differs, ones])
    first = np.maximum.accumulate(np.where(starts, index, 0), axis=0)
    last = np.minimum.accumulate(np.where(ends, index, n - 1)[::-1], axis=0)[::-1]
    ranks = np.empty_like(ordered)
    np.put_along_axis(ranks, order, (first + last) / 2.0 + 1.0, axis=0)
    return ranks


def _label_matrix(labels):
    labels = np.asarray(labels, bool)
    return labels[:, None] if labels.ndim == 1 else labels


def roc_auc(scores, labels):
    """ROC AUC of every unit for every attribute: [A, U].

    The Mann-Whitney statistic P(s_pos > s_neg) + P(s_pos = s_neg) / 2, from the
    average ranks of scores [n, U]; labels bool [n, A] (or [n]). NaN for an attribute
    that every face, or no face, has.
    """
    labels = _label_matrix(labels).astype(np.float64)
    positives = labels.sum(0)
    negatives = len(labels) - positives
    rank_sums = labels.T @ average_ranks(scores)  # [A, U]
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = ((rank_sums - (positives * (positives + 1) / 2)[:, None])
               / (positives * negatives)[:, None])
    return np.where(((positives > 0) & (negatives > 0))[:, None], auc, np.nan)


def firing_thresholds(scores, rate=FIRING_RATE):
    """[U]: for each column of scores [n, U], the largest value that at most
    max(1, floor(rate n)) of the n values exceed; `scores > threshold` then fires on at
    most that many faces (fewer where values tie at the threshold)."""
    scores = np.asarray(scores, np.float64)
    k = min(max(1, int(rate * len(scores))), len(scores) - 1)
    return -np.partition(-scores, k, axis=0)[k]


def balanced_accuracy(fires, labels):
    """(TPR + TNR) / 2 of every binary unit fires bool [n, U] as a detector of every
    attribute, labels bool [n, A] (or [n]): [A, U]; NaN where a class is absent."""
    labels = _label_matrix(labels)
    fires = np.asarray(fires, np.float64)
    positives, negatives = labels.sum(0), (~labels).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = (labels.T.astype(np.float64) @ fires) / positives[:, None]
        tnr = ((~labels).T.astype(np.float64) @ (1.0 - fires)) / negatives[:, None]
    return (tpr + tnr) / 2.0


# === The protocol ===

def halves(num, seed=HALVES_SEED):
    """Indices (A, B) of a seeded random split of num faces into halves (A the smaller)."""
    order = np.random.default_rng(seed).permutation(num)
    return np.sort(order[:num // 2]), np.sort(order[num // 2:])


def choose(on_a, on_b):
    """The detector chosen on half A, scored on B, for each attribute.

    on_a, on_b: [A, U] scores with chance at 0.5 whose complement 1 - s is the score of
    the opposite direction (AUC, balanced accuracy). Returns (unit [A] int, direction
    [A] +1 firing / -1 silent, score on A [A], score on B [A]) in that direction."""
    strength = np.nan_to_num(np.abs(on_a - 0.5), nan=-1.0)
    unit = strength.argmax(1)
    rows = np.arange(len(on_a))
    a, b = on_a[rows, unit], on_b[rows, unit]
    direction = np.where(a >= 0.5, 1, -1)
    return unit, direction, np.where(direction > 0, a, 1 - a), np.where(direction > 0, b, 1 - b)


def detectors(scores, labels, split, rate=FIRING_RATE, both_signs=False):
    """Both measures for one set of units: scores [M, U], labels bool [M, A], split the
    (A, B) indices. Returns {"auc": choose(...), "balanced_accuracy": choose(...)}.
    both_signs: binarise -scores too, as units U..2U-1 (the AUC of -s is 1 - AUC(s),
    which the direction covers already)."""
    a, b = split
    signed = np.concatenate([scores, -scores], 1) if both_signs else scores
    fires = signed > firing_thresholds(signed[a], rate)
    return {"auc": choose(roc_auc(scores[a], labels[a]), roc_auc(scores[b], labels[b])),
            "balanced_accuracy": choose(balanced_accuracy(fires[a], labels[a]),
                                        balanced_accuracy(fires[b], labels[b]))}


def select_attributes(names, labels, split, wanted=DEFAULT_ATTRIBUTES):
    """(the columns of labels [M, len(names)] to score, {skipped attribute: why}).

    wanted: attribute names; those the file lacks are skipped, and so are those that
    either half has on every face or on none."""
    missing = [name for name in wanted if name not in names]
    if len(missing) == len(wanted):
        raise UserError(f"the attribute file has none of {', '.join(wanted)}; pass a file "
                        "in CelebA's format with CelebA's attribute names")
    columns, skipped = [], {name: "not in the attribute file" for name in missing}
    for name in wanted:
        if name in missing:
            continue
        column = names.index(name)
        counts = [int(labels[half, column].sum()) for half in split]
        sizes = [len(half) for half in split]
        if all(0 < count < size for count, size in zip(counts, sizes)):
            columns.append(column)
        else:
            skipped[name] = (f"{counts[0]} of {sizes[0]} faces in half A and {counts[1]} "
                             f"of {sizes[1]} in half B have it")
    return columns, skipped


# === The units of a run ===

def layer_units(generator, z, batch=128):
    """The units of every sparse layer for latents z [M, d]: a list (top first) of
    float32 [M, h*w*c], column (y*w + x)*c + channel the coefficient of that channel at
    cell (y, x)."""
    chunks = [generator.parse(z[i:i + batch])["activations"]
              for i in range(0, len(z), batch)]
    return [np.concatenate([np.asarray(chunk[layer], np.float32).reshape(
        len(chunk[layer]), -1) for chunk in chunks]) for layer in range(generator.num_layers)]


# === A run's dissection, as evaluate writes it ===

def _where(source, unit, shape):
    """Where unit (a column) of a source sits: a layer's channel and cell, or a PCA
    component and its sign."""
    if source == "pca":
        return {"component": int(unit % shape), "sign": 1 if unit < shape else -1}
    _, w, c = shape
    return {"channel": int(unit % c), "cell": [int(unit // c // w), int(unit // c % w)]}


def dissect(generator, z, heldout, train, labels, names, *, wanted=DEFAULT_ATTRIBUTES,
            num_components=None, rate=FIRING_RATE, seed=HALVES_SEED):
    """The dissection of a generator on held-out faces, as a JSON-ready dict.

    Args:
      generator: the run's Generator; z [M, d] the held-out faces' inferred latents.
      heldout: the faces [M, H, W, 3] in [-1, 1]; train [N, H, W, 3] fits the PCA.
      labels: bool [M, len(names)], the held-out faces' attributes; names their names.
      wanted: the attributes to score; num_components: PCA's k (default d).
    Returns:
      {"attributes": scored names, "skipped": {name: why}, "num_faces", "halves":
      [|A|, |B|], "firing_rate", "seed", "summary": {source: {"auc", "balanced_accuracy"}},
      "detectors": [{"attribute", "source", "auc": {...}, "balanced_accuracy": {...}}]},
      a source being a layer "1".."n" (1 = top) or "pca", each measure recording the
      chosen unit's place, direction ("fires" or "silent"), half_a and half_b scores.
    """
    labels = np.asarray(labels, bool)
    split = halves(len(labels), seed)
    columns, skipped = select_attributes(tuple(names), labels, split, wanted)
    result = {"attributes": [names[c] for c in columns], "skipped": skipped,
              "num_faces": len(labels), "halves": [len(half) for half in split],
              "firing_rate": rate, "seed": seed, "summary": {}, "detectors": []}
    if not columns:
        return result
    labels = labels[:, columns]
    k = num_components or generator.config.latent_dim
    mean, directions = pixel_pca(train, k)
    coefficients = pca_coefficients(heldout, mean, directions)
    sources = [(str(i), units, shape) for i, (units, shape) in enumerate(
        zip(layer_units(generator, z), generator.config.feature_map_shapes()), 1)]
    sources.append(("pca", coefficients, len(directions)))
    for source, units, shape in sources:
        found = detectors(units, labels, split, rate, both_signs=source == "pca")
        result["summary"][source] = {measure: float(np.mean(found[measure][3]))
                                     for measure in found}
        for i, attribute in enumerate(result["attributes"]):
            record = {"attribute": attribute, "source": source}
            for measure, (unit, direction, on_a, on_b) in found.items():
                record[measure] = {**_where(source, unit[i], shape),
                                   "direction": "fires" if direction[i] > 0 else "silent",
                                   "half_a": float(on_a[i]), "half_b": float(on_b[i])}
            result["detectors"].append(record)
    return result


def summary_scores(dissection):
    """{attribute_auc_<source>, attribute_balanced_accuracy_<source>} of a dissection."""
    return {f"attribute_{measure}_{source}": value
            for source, scores in dissection["summary"].items()
            for measure, value in scores.items()}


def table_rows(num_layers):
    """evaluate's rows of `summary_scores`: (key, label, format)."""
    sources = [(str(i), f"layer {i}") for i in range(1, num_layers + 1)]
    sources.append(("pca", "pixel PCA of the code's size"))
    return tuple(row for source, name in sources for row in (
        (f"attribute_auc_{source}", f"Attribute AUC, best unit of {name} (held-out half, "
         "mean over attributes)", "{:.3f}"),
        (f"attribute_balanced_accuracy_{source}", f"Attribute balanced accuracy, best "
         f"unit of {name} firing at its top {FIRING_RATE:.2%}", "{:.3f}")))


def unit_labels(dissection):
    """{(layer, channel): ["unit 46 @ (1, 2): Eyeglasses, AUC 0.91", ...]}: the units
    that the dissection chose as the continuous detector of an attribute, for the
    dashboard. A unit that detects by staying silent says so ("silent for")."""
    labels = {}
    for record in dissection.get("detectors", []):
        if record["source"] == "pca":
            continue
        chosen = record["auc"]
        y, x = chosen["cell"]
        verb = "" if chosen["direction"] == "fires" else "silent for "
        labels.setdefault((int(record["source"]), chosen["channel"]), []).append(
            f"unit {chosen['channel']} @ ({y}, {x}): {verb}{record['attribute']}, AUC "
            f"{chosen['half_b']:.2f}")
    return labels


def read_unit_labels(workdir, checkpoint):
    """`unit_labels` of the dissection in WORKDIR/evaluation.json, if `evaluate
    --attributes` wrote one for this checkpoint (a path or a name such as "ckpt-12");
    {} otherwise, since labels of other weights would name the wrong units."""
    path = os.path.join(workdir, "evaluation.json")
    try:
        with open(path) as f:
            found = json.load(f).get("dissection")
    except (OSError, ValueError, AttributeError):
        return {}
    if not isinstance(found, dict):
        return {}
    if found.get("checkpoint") != os.path.basename(checkpoint):
        logging.warning("%s dissects %s, not the latest checkpoint %s; rerun evaluate "
                        "--attributes to label the units", path, found.get("checkpoint"),
                        os.path.basename(checkpoint))
        return {}
    return unit_labels(found)
