"""A small CNN that predicts CelebA's binary attributes: the feature space of the
sample-quality scores (`sample_quality`).

FID (Heusel et al., 2017) compares generated and real images in the pool features of an
Inception network trained on ImageNet. Where those weights are not at hand, a classifier
trained on the training faces' own attribute labels gives a feature space that is known
to carry what faces are made of (glasses, smiles, hair, beards): its penultimate layer
(`FEATURES_LAYER`, `feature_width` units) plays Inception's pool layer, and its sigmoid
outputs give the attribute frequencies of a set of images.

The classifier takes images of any size in [-1, 1] (the generator's range) and resizes
them to `CLASSIFIER_SIZE` itself, so one file scores runs of any image size. It is saved
as a `.keras` file beside a `.json` record of what it was trained on and how well it
predicts the held-out labels (`held_out_scores`), so that every run of a comparison is
scored by the same network and a reader can see how far to trust it.
"""

import json
import os

import keras
import numpy as np
import tensorflow as tf

from sparse_gen_tf.errors import UserError
from sparse_gen_tf.explanation import dissection

CLASSIFIER_SIZE = 64
FEATURES_LAYER = "features"


def build(num_attributes, feature_width=128, image_size=CLASSIFIER_SIZE):
    """The classifier: images [batch, H, W, 3] in [-1, 1], any H and W, to attribute
    probabilities [batch, num_attributes] (independent sigmoids: the labels are
    multi-label).

    Four stride-2 convolutions (64 -> 4 px, 32..256 channels) with batch normalisation,
    flattened (faces are aligned, so where a feature sits is information), then the
    `FEATURES_LAYER` Dense(feature_width, ReLU) and the sigmoid head.
    """
    inputs = keras.Input([None, None, 3], name="image")
    # Bilinear with antialiasing, as the data loader resizes (`images.center_crop_and_resize`).
    x = keras.layers.Resizing(image_size, image_size, antialias=True)(inputs)
    # Faces are mirror-symmetric in their labels; the flip is active in training only.
    x = keras.layers.RandomFlip("horizontal")(x)
    for channels in (32, 64, 128, 256):
        x = keras.layers.Conv2D(channels, 4, strides=2, padding="same", use_bias=False)(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.ReLU()(x)
    x = keras.layers.Flatten()(x)
    features = keras.layers.Dense(feature_width, activation="relu", name=FEATURES_LAYER)(x)
    x = keras.layers.Dropout(0.3)(features)
    outputs = keras.layers.Dense(num_attributes, activation="sigmoid", name="attributes")(x)
    return keras.Model(inputs, outputs, name="attribute_classifier")


def _dataset(images, labels, batch_size, shuffle_seed=None):
    """Batches of (float32 images in [-1, 1], float32 0/1 labels) from uint8 or float
    images; shuffled with shuffle_seed unless it is None."""
    data = tf.data.Dataset.from_tensor_slices((images, np.asarray(labels, np.float32)))
    if shuffle_seed is not None:
        data = data.shuffle(len(images), seed=shuffle_seed, reshuffle_each_iteration=True)
    return data.batch(batch_size).map(
        lambda x, y: (to_unit_interval(x), y)).prefetch(tf.data.AUTOTUNE)


def to_unit_interval(images):
    """uint8 [..., 3] -> float32 in [-1, 1]; float images are taken as in [-1, 1] already."""
    if images.dtype == tf.uint8:
        return tf.cast(images, tf.float32) / 127.5 - 1.0
    return tf.cast(images, tf.float32)


def train(images, labels, path, *, attribute_names=None, heldout_images=None,
          heldout_labels=None, epochs=8, batch_size=64, learning_rate=1e-3, seed=0,
          feature_width=128, provenance=None):
    """Trains the classifier on labelled images, saves it to path (a `.keras` file) and
    its record to `record_path(path)`; returns the trained model (`load(path)` gives it
    back with the same weights).

    images: [N, H, W, 3], uint8 or float in [-1, 1]. labels: [N, A] booleans or 0/1.
    heldout_images, heldout_labels: scored by `held_out_scores` for the record.
    seed: seeds the weights, the flips, dropout and the shuffling (the same data and seed
      give the same classifier on the same machine); it is set as the process's global
      seed (`keras.utils.set_random_seed`), since Keras layers draw from that.
    provenance: anything JSON-able that says where the images came from, kept in the record.
    """
    if not path.endswith(".keras"):
        raise UserError(f"the attribute classifier is saved as a .keras file, not {path}; "
                        "give a path ending in .keras")
    labels = np.asarray(labels)
    if labels.ndim != 2 or len(labels) != len(images):
        raise UserError(f"{len(images)} images need labels [{len(images)}, attributes], "
                        f"got {list(labels.shape)}; check the attribute file")
    keras.utils.set_random_seed(seed)
    model = build(labels.shape[1], feature_width)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss="binary_crossentropy",
                  metrics=[keras.metrics.BinaryAccuracy(name="accuracy")])
    # tf.data shuffles, seeded; fit's own shuffle does not apply to a dataset.
    history = model.fit(_dataset(images, labels, batch_size, shuffle_seed=seed),
                        epochs=epochs, shuffle=False, verbose=0)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    model.save(path)
    record = {"classifier": os.path.abspath(path), "num_images": len(images),
              "image_size": list(np.shape(images)[1:3]), "epochs": epochs, "seed": seed,
              "feature_width": feature_width,
              "attributes": list(attribute_names or range(labels.shape[1])),
              "train_loss": [float(v) for v in history.history["loss"]],
              "provenance": provenance}
    if heldout_images is not None and len(heldout_images):
        record["heldout"] = held_out_scores(model, heldout_images, heldout_labels,
                                            record["attributes"])
    with open(record_path(path), "w") as f:
        json.dump(record, f, indent=2)
    return model


def record_path(path):
    """The `.json` record saved beside a classifier file: `name.keras` -> `name.json`."""
    return path[:-len(".keras")] + ".json" if path.endswith(".keras") else path + ".json"


def read_record(path):
    """The record of the classifier at path (`train`), or None if it has none."""
    try:
        with open(record_path(path)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def load(path):
    """The classifier saved at path; UserError in one line if it is missing or not one."""
    if not os.path.isfile(path):
        raise UserError(f"no attribute classifier at {path}; train one first (evaluate "
                        "trains it there when given --attributes)")
    try:
        model = keras.models.load_model(path)
        model.get_layer(FEATURES_LAYER)
    except (ValueError, OSError, KeyError) as e:
        raise UserError(f"{path} is not an attribute classifier ({str(e).splitlines()[0]}); "
                        "delete it and let evaluate train a new one there") from None
    return model


def feature_model(model):
    """The same network cut at its penultimate layer: images -> features [batch, width]."""
    return keras.Model(model.inputs, [model.get_layer(FEATURES_LAYER).output, model.outputs[0]])


def features_and_probabilities(model, images, batch_size=256):
    """(penultimate features float64 [N, width], attribute probabilities float64 [N, A])
    of images [N, H, W, 3], uint8 or float in [-1, 1], in inference mode."""
    both = feature_model(model)
    features, probabilities = [], []
    for x, _ in _dataset(images, np.zeros([len(images), 0]), batch_size):
        f, p = both(x, training=False)
        features.append(f.numpy())
        probabilities.append(p.numpy())
    return (np.concatenate(features).astype(np.float64),
            np.concatenate(probabilities).astype(np.float64))


def held_out_scores(model, images, labels, attribute_names=None):
    """How well the classifier predicts labels [N, A] of images it never trained on:
    {"auc": {name: ROC AUC}, "accuracy": {name: accuracy at p > 0.5}, "auc_mean",
    "accuracy_mean", "majority_accuracy_mean" (always guessing each attribute's commoner
    value: the accuracy to beat), "num_images"}. Attributes with one class only in
    labels have AUC NaN and are left out of auc_mean."""
    labels = np.asarray(labels, bool)
    names = list(attribute_names or range(labels.shape[1]))
    _, probabilities = features_and_probabilities(model, images)
    # dissection.roc_auc scores every column against every attribute: attribute a's own
    # probability is column a.
    auc = np.diagonal(dissection.roc_auc(probabilities, labels))
    accuracy = ((probabilities > 0.5) == labels).mean(axis=0)
    majority = np.maximum(labels.mean(axis=0), 1 - labels.mean(axis=0))
    return {"num_images": len(labels),
            "auc_mean": float(np.nanmean(auc)) if not np.isnan(auc).all() else float("nan"),
            "accuracy_mean": float(accuracy.mean()),
            "majority_accuracy_mean": float(majority.mean()),
            "auc": {str(n): float(v) for n, v in zip(names, auc)},
            "accuracy": {str(n): float(v) for n, v in zip(names, accuracy)}}
