"""How often samples are legal derivations of the parts grammar, for ways of drawing them.

    python benchmarks/sampling.py --workdir=runs/parts [--num_samples=512] [--seed=0]

On a trained parts run, each row draws --num_samples images in another way, from the
same seed, and scores them with `parts_scores.grammar_validity` (legal quadrants, clean
cells), with the intensity of the parts in its cells (`parts_scores.cell_fits`, cells
not fitted as empty), whose spread says whether samples vary as the data's parts do
(Uniform[0.6, 1.0)) or are all alike. The package's priors (`--prior`, model/prior.py)
are marked [prior]:

  normal [prior]   z ~ N(0, I), the paper's prior
  rescaled         N(0, I) scaled to the chains' mean norm
  gaussian         a full-covariance Gaussian fitted to the persistent chains
  mixture          k-means clusters of the chains (each >= MIN_MEMBERS chains), a
                   full-covariance Gaussian per cluster, weighted by cluster size: the
                   ex-post density of Ghosh et al. (2020)
  latent EBM       an MLP energy f(z) on the chains, p(z) ∝ exp(f(z)) N(z; 0, I), learned
                   ex post by short-run Langevin from N(0, I) (Pang et al., 2020; 60
                   steps of s = 0.4 for prior samples, the chains as posterior samples)
  grammar [prior]  the induced And-Or grammar at the top layer, by blocks of top OR nodes
                   (`BlockGrammarPrior`): each block (a top AND node, nodes that the swap
                   test finds dependent, or the units painting one quadrant) picks one of
                   its OR configurations (k-means centroids of its codes over the training
                   parses, >= MIN_MEMBERS each) by cluster size; the rest of the network
                   renders it, TopK included. The row says which blocks its fit chose
  nodes [prior]    the same node by node (`NodeGrammarPrior`, the older default), and
                   with other numbers of clusters per node
  nodes, z         the least-squares z of the node prior's top feature map, rendered by
                   g: why a grammar sample has no z
  nodes, donors    each top AND node's OR nodes copied from the parse of another
                   training image (stores every training parse: not privacy-safe)
  quadrants        the grammar one layer down: each quadrant's block of bottom AND nodes a
                   centroid of that block's codes (>= MIN_MEMBERS each), painted by the
                   bottom kernels; or, copied from another training parse (close to
                   pasting training quadrants). No top-layer parse
  chains           the persistent chains themselves: the ceiling at this budget
  data             the training images: the control

Prints a markdown table; the latent EBM takes a few minutes (--ebm_iterations).
--figure=PATH also writes a PNG, rows of 16 images scaled up 3x: training images, their
reconstructions g(z_i), samples of the grammar prior, samples of N(0, I).

Every geometry of the grammar (data/parts.py GEOMETRIES), each prior:

    python benchmarks/sampling.py --geometry_dir=runs/geometries [--geometry_steps=400]

trains, where DIR/<geometry>_sparse or DIR/<geometry>_dense is missing, the geometry's
generator (`parts.GEOMETRIES[name].flags`) for --geometry_steps steps, sparse and dense
(K = the feature map's size), and prints one table: for each geometry and model, the
legal quadrants of its reconstructions g(z_i), and of the samples of each prior
(`prior.PRIORS`: grammar, nodes, joint, normal) fitted to its chains, the joint prior's
clusters sampled as their means alone, the joint prior's share of the reconstructions'
score, and how many of each quadrant's composites the legal quadrants of `grammar` reach
(fewest-most over the quadrants); then the blocks and numbers of configurations that
`grammar` chose on each run. `grammar` is fitted with the first training images, as
training fits it. The runs are trained with --prior=normal (no prior fits at checkpoints).
"""

import subprocess

import os
import sys
import time

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sparse_gen_tf.data import parts, pipeline
from sparse_gen_tf.explanation import parts_scores
from sparse_gen_tf.explanation.figures import image_grid, write_png
from sparse_gen_tf.explanation.visualize import upscale
from sparse_gen_tf.model import clusters
from sparse_gen_tf.model import prior as prior_lib
from sparse_gen_tf.training.run import open_run

flags.DEFINE_string("workdir", "runs/parts", "A training run on --dataset=parts.")
MAX_IMAGES = 1024  # the training images the grammar prior's fit checks against
flags.DEFINE_integer("num_samples", 512, "Images per row.")
flags.DEFINE_integer("seed", 0, "Seeds every draw.")
flags.DEFINE_integer("ebm_iterations", 2000, "Updates of the latent EBM; 0 skips it.")
flags.DEFINE_string("figure", None, "Also write the sample figure (module doc) here.")
flags.DEFINE_string("geometry_dir", None, "Compare the priors on every parts geometry, "
                    "with runs in (or trained into) this folder; replaces --workdir.")
flags.DEFINE_list("geometries", list(parts.GEOMETRIES), "The geometries to compare.")
flags.DEFINE_integer("geometry_steps", 400, "Train steps of each geometry's runs.")
flags.DEFINE_list("geometry_models", ["sparse", "dense"], "The models to compare.")
FLAGS = flags.FLAGS


def render(generator, top):
    """Images of top feature maps [n, s, s, c] (before TopK_1), in chunks."""
    return np.concatenate([generator.parse_from_top(chunk)["image"].numpy()
                           for chunk in np.array_split(top, max(1, len(top) // 256))])


def mixture(chains, rng, n):
    """n draws of a Gaussian mixture on k-means clusters of >= MIN_MEMBERS chains."""
    centroids, _ = clusters.kmeans(chains, 64, seed=FLAGS.seed)
    labels = ((chains[:, None] - centroids[None]) ** 2).sum(-1).argmin(1)
    sizes = np.bincount(labels, minlength=len(centroids))
    assert sizes.min() >= clusters.MIN_MEMBERS  # every component pools >= 8 chains
    draws = rng.choice(len(centroids), size=n, p=sizes / sizes.sum())
    d = chains.shape[1]
    z = np.empty((n, d))
    for c in np.unique(draws):
        members = chains[labels == c]
        covariance = np.cov(members.T) + 1e-3 * np.eye(d)
        z[draws == c] = rng.multivariate_normal(members.mean(0), covariance,
                                                int((draws == c).sum()))
    return z, len(centroids)


def latent_ebm(chains, n, iterations, steps=60, step_size=0.4, batch=128):
    """n short-run samples of an MLP energy prior learned on the chains (Pang et al.)."""
    d = chains.shape[1]
    keras.utils.set_random_seed(FLAGS.seed)
    energy = keras.Sequential([keras.Input((d,)), keras.layers.Dense(200),
                               keras.layers.LeakyReLU(0.2), keras.layers.Dense(200),
                               keras.layers.LeakyReLU(0.2), keras.layers.Dense(1)])
    optimizer = keras.optimizers.Adam(3e-4, beta_1=0.5)

    @tf.function(jit_compile=True)
    def short_run(z):  # Langevin on f(z) - ‖z‖²/2 from N(0, I)
        for _ in range(steps):
            with tf.GradientTape() as tape:
                tape.watch(z)
                log_p = tf.reduce_sum(energy(z)) - 0.5 * tf.reduce_sum(z * z)
            z = (z + 0.5 * step_size ** 2 * tape.gradient(log_p, z)
                 + step_size * tf.random.normal(tf.shape(z)))
        return z

    @tf.function(jit_compile=True)
    def update(positive, negative):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(energy(negative)) - tf.reduce_mean(energy(positive))
        optimizer.apply(tape.gradient(loss, energy.trainable_weights),
                        energy.trainable_weights)

    rng = np.random.RandomState(FLAGS.seed)
    for _ in range(iterations):
        update(chains[rng.randint(len(chains), size=batch)],
               short_run(tf.random.normal([batch, d])))
    return short_run(tf.random.normal([n, d])).numpy()


def quadrant_blocks(bottom):
    """[N, h, w, c] -> [4, N, (h/2)*(w/2)*c], the bottom AND nodes under each quadrant."""
    n, h, w, c = bottom.shape
    blocks = bottom.reshape(n, 2, h // 2, 2, w // 2, c).transpose(1, 3, 0, 2, 4, 5)
    return blocks.reshape(4, n, -1)


def paint_blocks(generator, blocks, shape):
    """The images of quadrant blocks [4, n, D] put together into bottom maps [n, h, w, c]."""
    n, (h, w, c) = blocks.shape[1], shape
    bottom = blocks.reshape(2, 2, n, h // 2, w // 2, c).transpose(2, 0, 3, 1, 4, 5)
    return tf.tanh(generator.deconvs[-1](bottom.reshape(n, h, w, c))).numpy()


def figure(path, rows, columns=16):
    """Writes rows (lists of images [n, H, W, 3] in [-1, 1]) as one grid, 3x."""
    images = np.concatenate([images[:columns] for images in rows])
    write_png(path, upscale(image_grid(images, columns=columns, pad=2), 3))


def mutual_information(a, b):
    """Plug-in mutual information in bits of two label arrays [N]."""
    joint = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(joint, (a, b), 1.0)
    joint /= joint.sum()
    outer = joint.sum(1, keepdims=True) @ joint.sum(0, keepdims=True)
    kept = joint > 0
    return float((joint[kept] * np.log2(joint[kept] / outer[kept])).sum())


def node_dependence(prior, top, rng):
    """(min, max) over pairs of top AND nodes of the mutual information between their
    clusters (each training parse's nearest configuration), and the same for shuffled
    pairs: the plug-in estimate's own bias."""
    n, s, _, c = top.shape
    codes = top.reshape(n, s * s, c)
    centroids, members = prior.centroids.numpy(), prior.members.numpy()
    labels = [(((codes[:, i, None] - centroids[i][members[i] > 0][None]) ** 2).sum(-1)
               .argmin(1)) for i in range(s * s)]
    pairs = [(i, j) for i in range(s * s) for j in range(i + 1, s * s)]
    found = [mutual_information(labels[i], labels[j]) for i, j in pairs]
    shuffled = [mutual_information(labels[i], rng.permutation(labels[j])) for i, j in pairs]
    return (min(found), max(found)), (min(shuffled), max(shuffled))


def geometry_run(name, model):
    """The workdir of geometry `name`'s `model` ("sparse" or "dense") run, trained for
    --geometry_steps steps with the geometry's flags unless it is there already.
    Trained with --prior=normal: the prior plays no part in training, and the table fits
    every prior afresh from the chains, so no grammar prior is fitted at checkpoints."""
    workdir = os.path.join(FLAGS.geometry_dir, f"{name}_{model}")
    if not os.path.exists(os.path.join(workdir, "checkpoints")):
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        subprocess.run([sys.executable, os.path.join(root, "train.py"),
                        "--flagfile=" + os.path.join(root, "parts.flags"),
                        *parts.GEOMETRIES[name].flags(name, dense=model == "dense"),
                        f"--workdir={workdir}", "--prior=normal",
                        f"--train_steps={FLAGS.geometry_steps}", f"--seed={FLAGS.seed}"],
                       check=True)
    return workdir


def geometry_table():
    """Prints, per geometry and model, the legal quadrants of the reconstructions and of
    each prior's samples (module doc)."""
    n = FLAGS.num_samples
    seeds = prior_lib.sample_seeds(n, FLAGS.seed)
    print(f"{n} images per cell, seed {FLAGS.seed}; legal quadrants "
          "(`parts_scores.grammar_validity`).\n")
    print("| geometry | model | steps | reconstructions | "
          + " | ".join(f"`{kind}`" for kind in prior_lib.PRIORS)
          + " | joint, cluster means only | joint / reconstructions | composites of "
          "`grammar` |\n|---|---|---|---|" + "---|" * len(prior_lib.PRIORS) + "---|---|---|")
    fits = []
    for name in FLAGS.geometries:
        for model in FLAGS.geometry_models:
            opened = open_run(geometry_run(name, model))
            generator, chains = opened.generator, opened.chains.numpy()
            truth = opened.data().ground_truth

            def legal(images):
                return parts_scores.grammar_validity(np.asarray(images), truth)[0]

            reconstructions = legal(generator(chains[:n]))
            images = pipeline.to_model_range(opened.data().images[:MAX_IMAGES]).numpy()
            scores = {}
            for kind in prior_lib.PRIORS:
                prior = prior_lib.make(kind, generator.config)
                start = time.perf_counter()
                # The grammar prior checks its configurations against the training
                # images, as training fits it (`AlternatingBackprop.fit_prior`).
                prior.fit(generator, chains, seed=opened.config.seed, images=images)
                seconds = time.perf_counter() - start
                sampled = prior.sample(generator, seeds)["image"].numpy()
                scores[kind] = legal(sampled)
                if kind == "grammar":
                    reached = composites_reached(sampled, truth)
                    fits.append(f"{name} {model}: {describe_fit(prior.fit_report)}; "
                                f"fit {seconds:.1f} s")
                if kind == "joint":  # the same clusters, each sampled as its mean only
                    prior.scales.assign(tf.zeros_like(prior.scales))
                    scores["means"] = legal(prior.sample(generator, seeds)["image"])
            print(f"| {name} | {model} | {opened.step} | {reconstructions:.3f} | "
                  + " | ".join(f"{scores[kind]:.3f}" for kind in prior_lib.PRIORS)
                  + f" | {scores['means']:.3f}"
                  + f" | {scores['joint'] / max(reconstructions, 1e-9):.2f}"
                  + f" | {reached} |", flush=True)
    print("\nThe blocks and configurations `grammar` chose (`BlockGrammarPrior.fit_report`):\n")
    for line in fits:
        print(f"- {line}")


def composites_reached(images, truth):
    """"a-b/m": the fewest and most of its m composites that any quadrant reaches in the
    legal quadrants of images [n, H, W, 3] (a prior that drops configurations can be
    legal more often by painting fewer composites)."""
    part, _, _ = parts_scores.cell_fits(images, truth.parts)
    legal = parts_scores.legal_quadrants(images, truth)
    counts = []
    for q in range(4):
        rows, cols = slice(2 * (q // 2), 2 * (q // 2) + 2), slice(2 * (q % 2), 2 * (q % 2) + 2)
        cells = part[:, rows, cols].reshape(len(part), 1, 4)
        which = (cells == truth.composites[q].reshape(1, -1, 4)).all(-1)  # [n, m]
        counts.append(int(which[legal[:, q]].any(0).sum()))
    return f"{min(counts)}-{max(counts)}/{truth.composites.shape[1]}"


def describe_fit(report):
    """One line of what `BlockGrammarPrior.fit` chose: its split, blocks, clusters, scores."""
    blocks = " ".join("{" + ",".join(map(str, nodes)) + "}" for nodes in report["nodes"])
    splits = ", ".join(f"{name} {n}: {s:.2f}" for (name, n), s in report["splits"].items())
    lifted = ", ".join(f"{count}: {s:.2f}" for count, s in report["lifted"].items())
    chosen = (f"4 quadrants of fm^2 lifted, {report['clusters']} configurations each"
              if report["split"] == "lifted" else
              f"{len(report['nodes'])} blocks by {report['split']} (nodes {blocks}), "
              f"{report['clusters']} configurations per block")
    searched = (f"; blocks tried at {max(report['counts'])}: {splits}; best blocks by "
                "count: " + ", ".join(f"{c}: {s:.2f}" for c, s in report["counts"].items())
                if report["counts"] else "; blocks not searched")
    if report.get("dropped"):
        chosen += (f"; {report['dropped'][0]} configurations ({report['dropped'][1]:.0%} of "
                   "the members) dropped, far from the training images")
    return (f"{chosen}; nearest-quadrant check of its samples {report['score']:.2f} ("
            + (f"lifted by count: {lifted}" if lifted else "no lift") + searched + ")")


def main(argv):
    del argv
    if FLAGS.geometry_dir:
        unknown = sorted(set(FLAGS.geometries) - set(parts.GEOMETRIES))
        if unknown:
            sys.exit(f"unknown geometries {', '.join(unknown)}; use some of "
                     f"{', '.join(parts.GEOMETRIES)}")
        if set(FLAGS.geometry_models) - {"sparse", "dense"}:
            sys.exit("--geometry_models takes sparse, dense or both")
        geometry_table()
        return
    opened = open_run(FLAGS.workdir)
    generator, chains = opened.generator, opened.chains.numpy()
    data = opened.data()
    if data.ground_truth is None:
        sys.exit(f"{FLAGS.workdir} is not a parts run: the scores need its grammar")
    truth, n, d = data.ground_truth, FLAGS.num_samples, chains.shape[1]
    rng = np.random.RandomState(FLAGS.seed)
    seeds = prior_lib.sample_seeds(n, FLAGS.seed)
    norm = np.linalg.norm(chains, axis=1).mean()
    parse = generator.parse(chains)
    top = parse["feature_maps"][0].numpy()  # [N, s, s, c], before TopK
    s = top.shape[1]
    rows = [("normal [prior]: z ~ N(0, I)", "–", prior_lib.NormalPrior(
        generator.config).sample(generator, seeds)["image"].numpy())]
    rows.append((f"N(0, I) rescaled to the chains' mean norm ({norm:.1f} vs "
                 f"{np.sqrt(d):.1f})", "–",
                 generator(rng.standard_normal((n, d)) * norm / np.sqrt(d)).numpy()))
    rows.append(("full-covariance Gaussian fitted to the chains", "mean, covariance",
                 generator(rng.multivariate_normal(chains.mean(0), np.cov(chains.T),
                                                   n)).numpy()))
    mixed, components = mixture(chains, rng, n)
    rows.append((f"mixture of {components} Gaussians on k-means clusters of the chains",
                 "means, covariances of >= 8 chains", generator(mixed).numpy()))
    if FLAGS.ebm_iterations:
        rows.append((f"latent EBM on the chains, ex post ({FLAGS.ebm_iterations} updates)",
                     "an MLP", generator(latent_ebm(chains, n, FLAGS.ebm_iterations)).numpy()))
    prior = opened.prior
    if prior.kind != "nodes":  # the node-by-node prior: its rows, and the nodes' dependence
        prior = prior_lib.NodeGrammarPrior(generator.config)
        prior.fit(generator, chains, seed=opened.config.seed)
    blocks = prior_lib.BlockGrammarPrior(generator.config)
    blocks.fit(generator, chains, seed=opened.config.seed)
    grammar_row = len(rows)
    rows.append((f"grammar [prior]: {describe_fit(blocks.fit_report)}",
                 "centroids of >= 8 codes", blocks.sample(generator, seeds)["image"].numpy()))
    used = (prior.members.numpy() > 0).sum(-1)
    rows.append((f"nodes [prior]: top AND nodes from {used.min()}-{used.max()} "
                 "configurations each", "centroids of >= 8 codes",
                 prior.sample(generator, seeds)["image"].numpy()))
    for count in (8, 16, 64):
        other = prior_lib.NodeGrammarPrior(generator.config, clusters=count)
        other.fit(generator, chains, seed=opened.config.seed)
        rows.append((f"nodes, at most {count} configurations per node",
                     "centroids of >= 8 codes", other.sample(generator, seeds)["image"].numpy()))
    # fm^1 = z W + b flattened: the z nearest to a sampled map, in least squares.
    sampled_top = prior.sample(generator, seeds)["feature_maps"][0].numpy().reshape(n, -1)
    projected = np.linalg.lstsq(generator.fc.kernel.numpy().T,
                                (sampled_top - generator.fc.bias.numpy()).T, rcond=None)[0].T
    rows.append(("nodes, z: the least-squares z of each sampled top map, g(z)",
                 "as grammar", generator(projected).numpy()))
    donors = rng.randint(len(chains), size=(n, s, s))
    recombined = top[donors, np.arange(s)[None, :, None], np.arange(s)[None, None, :]]
    rows.append(("nodes, donors: each top AND node's code from another training parse",
                 "every training parse", render(generator, recombined)))
    bottom = parse["activations"][-1].numpy()
    blocks = quadrant_blocks(bottom)
    block_centroids, block_draws = [], []
    for q in range(4):
        centroids, members = clusters.kmeans(blocks[q], 32, seed=FLAGS.seed + q)
        block_centroids.append(centroids)
        block_draws.append(centroids[rng.choice(len(centroids), size=n,
                                                p=members / members.sum())])
    rows.append(("quadrants: each quadrant's bottom AND nodes a centroid of that block's "
                 "codes (no top-layer parse)", "centroids of >= 8 blocks",
                 paint_blocks(generator, np.stack(block_draws), bottom.shape[1:])))
    copied = np.stack([blocks[q][rng.randint(len(chains), size=n)] for q in range(4)])
    rows.append(("quadrants, donors: each quadrant's bottom AND nodes copied from another "
                 "training parse", "every training parse",
                 paint_blocks(generator, copied, bottom.shape[1:])))
    rows.append(("the persistent chains (ceiling)", "every chain", generator(chains[:n]).numpy()))
    rows.append(("the training images (control)", "–",
                 pipeline.to_model_range(data.images[:n]).numpy()))
    if FLAGS.figure:
        figure(FLAGS.figure, [rows[-1][2], rows[-2][2], rows[grammar_row][2], rows[0][2]])
    print(f"Run {FLAGS.workdir}, step {opened.step}, K = {list(opened.config.generator.topk)}; "
          f"{n} images per row, seed {FLAGS.seed}.\n")
    (low, high), (shuffled_low, shuffled_high) = node_dependence(prior, top, rng)
    print(f"Mutual information between the top AND nodes' configurations in the training "
          f"parses: {low:.2f}-{high:.2f} bits (shuffled pairs: {shuffled_low:.2f}-"
          f"{shuffled_high:.2f}).\n")
    print("| samples from | what it stores | legal quadrants | clean cells | part "
          "intensity, mean ± sd |\n|---|---|---|---|---|")
    for label, stores, images in rows:
        validity, clean = parts_scores.grammar_validity(images, truth)
        part, intensity, _ = parts_scores.cell_fits(images, truth.parts)
        drawn = intensity[part >= 0]  # the data: Uniform[0.6, 1.0), 0.80 ± 0.12
        print(f"| {label} | {stores} | {validity:.3f} | {clean:.3f} | "
              f"{drawn.mean():.2f} ± {drawn.std():.2f} |", flush=True)


if __name__ == "__main__":
    app.run(main)
