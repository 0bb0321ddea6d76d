"""The paper's experiments on real images, sparse against dense: faces (Figs. 2-3), cars
and brick walls (Fig. 4), and on faces the trade-off between fidelity and parts across K.

    python benchmarks/paper_experiments.py --faces=DIR --attributes=FILE \
        [--cars=DIR] [--bricks=DIR | --brick_photos=DIR | --make_bricks]

For each dataset given it trains its runs under --runs, as a user would with train.py
(the exact commands are printed and kept in RUNS/paper_experiments.json):

  <data>_sparse, <data>_dense   --flagfile=<data>.flags --dataset=folder --data_dir=DIR
                                --heldout=N --train_steps=S; dense is --topk=K_i = h_i w_i c_i
                                (every unit of every feature map, 1024,2048 for faces)
  faces_k<m>                    the sparse run with every K times m (--face_multiples):
                                the points between the paper's K and dense
  faces_trial_<name>            --trial_steps runs that try one change each against
                                faces_trial_base: the descriptor (--descriptor), the largest
                                square instead of the face box (--crop=1), bottom kernels
                                that overlap (--kernel_sizes=4,24) (--face_trials)

A workdir that already holds a checkpoint of its step budget is reused, not retrained
(with --notrain any checkpoint is), so a second call only re-scores and redraws. Then it
runs `evaluate` on every run (held-out PSNR through inference.infer and, for the sparse
and dense pairs, the exported reconstruct; training PSNR, sparsity, location specificity,
sharpness; on faces with --attributes, the dissection of the held-out parses against
the attribute labels and the sample Fréchet distance of the attribute classifier at
--classifier), writes DOCS/real_images.md (the tables, commands and wall times) and
these figures, sparse left and dense right unless said otherwise:

  DOCS/<data>_kernels_bottom.png       Fig. 2a, bottom kernels normalised per kernel
  DOCS/<data>_kernels_bottom_raw.png   the same as they paint, tanh(bias + s ker)
  DOCS/<data>_kernels_top.png          Fig. 2b, the most used top units, each switched on
                                       alone and rendered by the layers below
                                       (`visualize.top_units_alone`), minus the empty
                                       parse, normalised per unit
  DOCS/<data>_kernels_top_raw.png      the same images as the generator paints them
  DOCS/<data>_parse.png                Fig. 3, the parse of held-out image 0 (normalised
                                       OR nodes), sparse above dense
  DOCS/<data>_reconstructions.png      rows: held-out images, sparse, dense reconstructions
  DOCS/<data>_samples.png              samples from each run's prior: sparse rows above
                                       dense rows
  DOCS/faces_tradeoff.png              held-out PSNR against the attribute AUC of the
                                       bottom units and against the samples' Fréchet
                                       distance, one point per K (needs --attributes)

--make_bricks writes --num_bricks random 64x64 crops of skimage.data.brick() (512x512
grey) into RUNS/brick_crops (needs scikit-image, pip install .[examples]);
--brick_photos=DIR writes as many random 64x64 crops of the colour photographs in DIR
into RUNS/brick_photo_crops. The trade-off figure needs matplotlib (.[examples]).
"""

import json
import os
import subprocess
import sys
import time

import numpy as np
from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from sparse_gen_tf.commands import cli
from sparse_gen_tf.reports import evaluation
from sparse_gen_tf.explanation import visualize
from sparse_gen_tf.learning import inference
from sparse_gen_tf.data import pipeline
from sparse_gen_tf.errors import UserError
from sparse_gen_tf.explanation.figures import image_grid, write_png
from sparse_gen_tf.training.run import latest_checkpoint, open_run, read_config

FLAGS = flags.FLAGS
flags.DEFINE_string("faces", None, "Folder of aligned face images (e.g. CelebA's "
                    "img_align_celeba); omit to skip the faces.")
flags.DEFINE_string("attributes", None, "Attribute file of the faces in CelebA's format "
                    "(list_attr_celeba.txt): adds the dissection, the sample Fréchet "
                    "distance and the trade-off figure.")
flags.DEFINE_string("classifier", None, "The attribute classifier that scores samples "
                    "(trained there on the first face run's training faces if missing); "
                    "default RUNS/attribute_classifier.keras.")
flags.DEFINE_string("cars", None, "Folder of car images; omit to skip the cars.")
flags.DEFINE_string("bricks", None, "Folder of brick-wall crops; omit to skip the bricks.")
flags.DEFINE_string("brick_photos", None, "Folder of brick-wall photographs: random 64x64 "
                    "crops of them become the bricks.")
flags.DEFINE_bool("make_bricks", False, "Write random crops of skimage.data.brick() into "
                  "RUNS/brick_crops and use them as --bricks (needs scikit-image).")
flags.DEFINE_integer("num_bricks", 1000, "Crops --make_bricks or --brick_photos writes.",
                     lower_bound=1)
flags.DEFINE_string("runs", "runs/paper", "Where the training runs go (one workdir each).")
flags.DEFINE_string("docs", "docs", "Where the figures and real_images.md go.")
flags.DEFINE_string("faces_flagfile", os.path.join(ROOT, "celeba.flags"),
                    "Flag file of the face runs.")
flags.DEFINE_string("cars_flagfile", os.path.join(ROOT, "celeba.flags"),
                    "Flag file of the car runs (with --crop=1: a car fills its image).")
flags.DEFINE_string("bricks_flagfile", os.path.join(ROOT, "bricks.flags"),
                    "Flag file of the brick runs.")
flags.DEFINE_integer("face_steps", 1000, "Training steps of each face run.", lower_bound=1)
flags.DEFINE_integer("car_steps", 1000, "Training steps of each car run.", lower_bound=1)
flags.DEFINE_integer("brick_steps", 1000, "Training steps of each brick run.", lower_bound=1)
flags.DEFINE_integer("face_images", None, "--num_images of the face runs (default: the "
                     "flag file's).", lower_bound=1)
flags.DEFINE_integer("car_images", None, "--num_images of the car runs.", lower_bound=1)
flags.DEFINE_list("face_multiples", [], "Also train the sparse face run with every K "
                  "times each of these (e.g. 2,4): the trade-off's middle points.")
flags.DEFINE_list("face_trials", [], "Short face runs that each try one change against "
                  "faces_trial_base: descriptor (--descriptor), square (--crop=1), overlap "
                  "(--kernel_sizes=4,24).")
flags.DEFINE_integer("trial_steps", 1500, "Training steps of each --face_trials run.",
                     lower_bound=1)
flags.DEFINE_integer("heldout", 50, "Face images held out of training (the files after "
                     "the training ones).", lower_bound=1)
flags.DEFINE_integer("car_heldout", 50, "Car images held out of training.", lower_bound=1)
flags.DEFINE_integer("brick_heldout", 50, "Brick crops held out of training.",
                     lower_bound=1)
flags.DEFINE_integer("num_heldout", 50, "Held-out images evaluate scores.", lower_bound=1)
flags.DEFINE_integer("num_fit", 200, "Training images evaluate runs the held-out "
                     "inference on (the training PSNR through it).", lower_bound=1)
flags.DEFINE_bool("train", True, "Train runs that lack the final checkpoint; --notrain "
                  "scores whatever checkpoint each workdir has.")
flags.DEFINE_bool("served", True, "Also score the exported reconstruct signature of the "
                  "sparse and dense runs.")
cli.define_inference_flags()
# Noise-free refinement of the winning chain, at a third of the training δ = 0.3 (at δ
# itself gradient ascent overshoots).
FLAGS.set_default("refine_steps", 200)
FLAGS.set_default("refine_step_size", 0.1)

TRIALS = {"descriptor": ["--descriptor"], "square": ["--crop=1"],
          # Bottom kernels wider than their stride overlap their neighbours' cells: a
          # candidate for the seams between the 16x16 cells.
          "overlap": ["--kernel_sizes=4,24"]}
# {absolute image folder: the name the docs give it}, filled in by main.
DATA_NAMES = {}
# A car fills its photograph: keep the largest square, not celeba.flags' face box.
DATASET_FLAGS = {"cars": ["--crop=1"]}
KINDS = ("sparse", "dense")
TIMES_FILE = "wall_time.json"


def make_bricks(folder, num, seed=0, crop=64):
    """Writes num random crop x crop crops of skimage.data.brick() as PNGs into folder."""
    try:
        from skimage import data as skimage_data
    except ImportError:
        raise UserError("--make_bricks needs scikit-image: pip install .[examples], or pass "
                        "--bricks=DIR of your own crops") from None
    wall = skimage_data.brick()  # [512, 512] uint8 grey
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    for i in range(num):
        y, x = rng.integers(0, wall.shape[0] - crop + 1), rng.integers(0, wall.shape[1] - crop + 1)
        patch = np.repeat(wall[y:y + crop, x:x + crop, None], 3, axis=-1)
        write_png(os.path.join(folder, f"{i:04d}.png"), patch)
    return folder


def crop_photos(photos, folder, num, seed=0, crop=64):
    """Writes num random crop x crop crops of the colour photographs under `photos` as PNGs
    into folder, each photo's share in proportion to the crops it holds (its area)."""
    from PIL import Image
    paths = sorted(os.path.join(photos, f) for f in os.listdir(photos)
                   if f.lower().endswith((".jpg", ".jpeg", ".png")))
    walls = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    walls = [w for w in walls if min(w.shape[:2]) >= crop]
    if not walls:
        raise UserError(f"--brick_photos={photos} holds no image of at least {crop} px a "
                        "side; pass a folder of brick-wall photographs")
    area = np.array([(w.shape[0] - crop + 1) * (w.shape[1] - crop + 1) for w in walls], float)
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    for i, which in enumerate(rng.choice(len(walls), size=num, p=area / area.sum())):
        wall = walls[which]
        y, x = rng.integers(0, wall.shape[0] - crop + 1), rng.integers(0, wall.shape[1] - crop + 1)
        write_png(os.path.join(folder, f"{i:04d}.png"), wall[y:y + crop, x:x + crop])
    return folder


def dense_topk(workdir):
    """K_i = h_i w_i c_i of every sparse layer of the run in workdir: TopK keeps everything."""
    shapes = read_config(workdir).generator.feature_map_shapes()
    return ",".join(str(h * w * c) for h, w, c in shapes)


def heldout_of(name):
    """--heldout of one dataset's runs."""
    return {"faces": FLAGS.heldout, "cars": FLAGS.car_heldout,
            "bricks": FLAGS.brick_heldout}[name]


def train_command(flagfile, data_dir, steps, workdir, heldout, extra=()):
    """The train.py command line of one run, as a list."""
    return [sys.executable, os.path.join(ROOT, "train.py"), f"--flagfile={flagfile}",
            "--dataset=folder", f"--data_dir={data_dir}", f"--heldout={heldout}",
            f"--train_steps={steps}", f"--workdir={workdir}", *extra]


def shown(command):
    """A train command as the docs print it: paths inside the repository relative, the
    image folder as its flag's name in capitals (FACES, CARS, BRICKS) and the workdir
    under RUNS, so that no machine's paths reach the docs."""
    words = []
    for word in command[1:]:
        flag, _, value = word.partition("=")
        if flag == "--data_dir":
            word = f"--data_dir={DATA_NAMES.get(os.path.abspath(value), value)}"
        elif flag == "--workdir":
            word = f"--workdir=RUNS/{os.path.basename(value)}"
        words.append(word.replace(ROOT + os.sep, ""))
    return " ".join(words)


def checkpoint_step(workdir):
    """The step of workdir's latest checkpoint, or None."""
    path = latest_checkpoint(workdir) if os.path.isdir(workdir) else None
    return int(path.rsplit("-", 1)[1]) if path else None


def train_or_reuse(command, workdir, steps):
    """Runs command unless workdir already holds step `steps` (or any step, --notrain);
    returns the run's recorded training wall time in seconds (None if unknown)."""
    times_path = os.path.join(workdir, TIMES_FILE)
    recorded = json.load(open(times_path)) if os.path.exists(times_path) else {}
    step = checkpoint_step(workdir)
    saved = read_config(workdir) if step is not None else None
    if saved is not None and saved.train_steps != steps and FLAGS.train:
        # Resuming with another budget would silently turn the run into a different one.
        raise UserError(f"{workdir} was trained with --train_steps={saved.train_steps}, not "
                        f"{steps}; pass that step budget to reuse it, or another --runs")
    # The last checkpoint is at the end of the last epoch, at or just past `steps`.
    if (step is not None and step >= steps) or (step is not None and not FLAGS.train):
        print(f"reusing {workdir} (step {step})", flush=True)
        return recorded.get("train_s")
    if not FLAGS.train:
        raise UserError(f"{workdir} has no checkpoint and --notrain was given; drop "
                        "--notrain to train it")
    print("python " + shown(command), flush=True)
    start = time.time()
    result = subprocess.run(command, cwd=os.getcwd(), capture_output=True, text=True)
    if result.returncode:
        tail = [line for line in result.stderr.splitlines() if line.strip()][-1:]
        raise UserError(f"training {workdir} failed: {tail[0] if tail else 'no message'}")
    # A resumed run adds its time to the earlier part's.
    seconds = (recorded.get("train_s") or 0.0) + time.time() - start
    with open(times_path, "w") as f:
        json.dump({"train_s": seconds, "steps": steps}, f)
    return seconds


def side_by_side(left, right, gap=12):
    """uint8 images [h, w, 3] next to each other on white, top-aligned."""
    height = max(left.shape[0], right.shape[0])
    pad = [np.pad(x, [(0, height - x.shape[0]), (0, 0), (0, 0)], constant_values=255)
           for x in (left, right)]
    return np.concatenate([pad[0], np.full((height, gap, 3), 255, np.uint8), pad[1]], 1)


def one_above_other(top, bottom, gap=12):
    width = max(top.shape[1], bottom.shape[1])
    pad = [np.pad(x, [(0, 0), (0, width - x.shape[1]), (0, 0)], constant_values=255)
           for x in (top, bottom)]
    return np.concatenate([pad[0], np.full((gap, width, 3), 255, np.uint8), pad[1]])


def top_unit_grid(generator, z, num, normalised):
    """Grid of the num most used top units, each alone through the layers below (Fig. 2b,
    `visualize.top_units_alone`); normalised: minus the empty parse, stretched per unit."""
    _, _, _, drawn = visualize.top_units_alone(generator, z, num)
    if normalised:
        top = np.zeros((1,) + tuple(generator.top_feature_map(z[:1]).shape[1:]), np.float32)
        empty = generator.parse_from_top(top)["image"].numpy()
        drawn = visualize.normalise_each(drawn - empty)
    scale = max(1, 64 // drawn.shape[1])
    return image_grid(np.stack([visualize.upscale(d, scale) for d in drawn]), columns=8,
                      pad=2)


def draw_figures(name, opened, docs, settings, num_images=8, num_samples=16, seed=0):
    """Writes DOCS/<name>_*.png (see the module docstring) for {kind: opened run}."""
    pictures = {}
    heldout = None
    for kind, run in opened.items():
        generator = run.generator
        z = visualize.sample_latents(generator, 128, seed)
        pictures[kind] = {
            "kernels_bottom": kernel_grid(generator, z, normalised=True),
            "kernels_bottom_raw": kernel_grid(generator, z, normalised=False),
            "kernels_top": top_unit_grid(generator, z, 32, normalised=True),
            "kernels_top_raw": top_unit_grid(generator, z, 32, normalised=False)}
        images, _ = pipeline.heldout_images(run.config, num_images)
        images = pipeline.to_model_range(images).numpy()
        heldout = images
        inferred = inference.reconstruct(run, images, settings=settings,
                                         seed=seed).numpy()
        pictures[kind]["reconstructions"] = generator(inferred).numpy()
        pictures[kind]["parse"] = visualize.parse_figure(generator, inferred[0],
                                                         normalised=True)
        pictures[kind]["samples"] = evaluation.draw_samples(run, num_samples, seed)
    written = []

    def write(suffix, image):
        path = os.path.join(docs, f"{name}_{suffix}.png")
        write_png(path, image)
        written.append(path)

    sparse, dense = pictures["sparse"], pictures["dense"]
    for key in ("kernels_bottom", "kernels_bottom_raw", "kernels_top", "kernels_top_raw"):
        write(key, side_by_side(sparse[key], dense[key]))
    write("parse", one_above_other(sparse["parse"], dense["parse"]))
    scale = max(1, 64 // heldout.shape[1])
    rows = np.concatenate([heldout, sparse["reconstructions"], dense["reconstructions"]])
    write("reconstructions", visualize.upscale(image_grid(rows, columns=len(heldout)), scale))
    samples = [visualize.upscale(image_grid(pictures[k]["samples"], columns=8), scale)
               for k in KINDS]
    write("samples", side_by_side(*samples))
    return written


def kernel_grid(generator, z, normalised):
    """The bottom kernels (Fig. 2a) as one uint8 grid, 16 a row."""
    patches = visualize.bottom_kernels(generator, z, normalised=normalised)
    scale = max(1, 32 // patches.shape[1])
    return image_grid(np.stack([visualize.upscale(p, scale) for p in patches]),
                      columns=min(16, len(patches)), pad=2)


def scaled_topk(workdir, multiple):
    """The sparse run's K_i times multiple, capped at each feature map's size."""
    config = read_config(workdir).generator
    return ",".join(str(min(k * multiple, h * w * c))
                    for k, (h, w, c) in zip(config.topk, config.feature_map_shapes()))


def planned_runs(name, steps, num_images):
    """[(kind, extra train.py flags, steps)] of one dataset: sparse and dense, and on
    faces the K multiples and the trials. Dense and the multiples read their K from the
    sparse run, which trains first, so their flags are functions called in turn."""
    size = [f"--num_images={num_images}"] if num_images else []
    size += DATASET_FLAGS.get(name, [])
    sparse_dir = os.path.join(FLAGS.runs, f"{name}_sparse")
    runs = [("sparse", lambda: size, steps),
            ("dense", lambda: size + [f"--topk={dense_topk(sparse_dir)}"], steps)]
    if name == "faces":
        runs += [(f"k{m}", lambda m=int(m): size + [f"--topk={scaled_topk(sparse_dir, m)}"],
                  steps) for m in FLAGS.face_multiples]
        if FLAGS.face_trials:
            runs += [(f"trial_{t}", lambda t=t: size + TRIALS.get(t, []), FLAGS.trial_steps)
                     for t in ["base", *FLAGS.face_trials]]
    return runs


def experiment(name, data_dir, flagfile, steps, settings, num_images=None):
    """Trains (or reuses), scores and draws the runs of one dataset; returns
    ({kind: {"command", "train_s", "step", "evaluate_s", "results"}}, figures)."""
    if not os.path.isdir(data_dir):
        raise UserError(f"--{name}={data_dir} is not a folder; pass a folder of images")
    if not os.path.exists(flagfile):
        raise UserError(f"--{name}_flagfile={flagfile} does not exist")
    records, opened = {}, {}
    for kind, extra, run_steps in planned_runs(name, steps, num_images):
        workdir = os.path.join(FLAGS.runs, f"{name}_{kind}")
        command = train_command(flagfile, data_dir, run_steps, workdir, heldout_of(name),
                                extra())
        seconds = train_or_reuse(command, workdir, run_steps)
        start = time.time()
        faces = name == "faces" and FLAGS.attributes
        served = FLAGS.served and kind in KINDS
        results = earlier_evaluation(workdir, settings, served, faces, heldout_of(name))
        if results is None:
            results = evaluation.evaluate(
                workdir, num_heldout=FLAGS.num_heldout, num_fit=FLAGS.num_fit,
                settings=settings, baseline=False,
                served=served, attributes=FLAGS.attributes if faces else None,
                classifier=classifier_path() if faces else None)
        records[kind] = {"command": "python " + shown(command), "train_s": seconds,
                         "step": checkpoint_step(workdir), "evaluate_s": time.time() - start,
                         "results": results}
        if kind in KINDS:
            opened[kind] = open_run(workdir)
    figures = draw_figures(name, opened, FLAGS.docs, settings)
    if name == "faces" and FLAGS.attributes:
        figures.append(tradeoff_figure(records, os.path.join(FLAGS.docs,
                                                             "faces_tradeoff.png")))
    return records, figures


def earlier_evaluation(workdir, settings, served, attributes, heldout):
    """workdir's evaluation.json if `evaluate` already scored its latest checkpoint as this
    call would (same inference settings and held-out count, the exported reconstruct and
    the attribute scores when asked for), else None."""
    path = os.path.join(workdir, "evaluation.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        results = json.load(f)
    latest = os.path.basename(latest_checkpoint(workdir) or "")
    same = (results.get("checkpoint") == latest
            and results.get("inference") == settings.to_dict()
            and results.get("num_heldout") == min(FLAGS.num_heldout, heldout)
            and (not served or "psnr_heldout_served" in results)
            and (not attributes or "frechet_samples" in results))
    if same:
        print(f"reusing {path}", flush=True)
    return results if same else None


def classifier_path():
    return FLAGS.classifier or os.path.join(FLAGS.runs, "attribute_classifier.keras")


def sweep(records):
    """The K sweep's records, sparsest first: sparse, k<m> by m, dense."""
    multiples = sorted((int(k[1:]), k) for k in records if k[0] == "k" and k[1:].isdigit())
    return [("sparse", records["sparse"])] + [(k, records[k]) for _, k in multiples] + [
        ("dense", records["dense"])]


# The trade-off's columns: (key in evaluation.json, heading, format).
TRADEOFF = (("psnr_heldout", "PSNR held-out (dB)", "{:.2f}"),
            ("attribute_auc_2", "AUC, bottom units", "{:.3f}"),
            ("attribute_balanced_accuracy_2", "Balanced acc., bottom, 1/16 firing",
             "{:.3f}"),
            ("attribute_auc_1", "AUC, top units", "{:.3f}"),
            ("frechet_samples", "Fréchet, samples", "{:.2f}"),
            ("frechet_reconstructions", "Fréchet, reconstructions", "{:.2f}"),
            ("sharpness_samples", "Sharpness, samples", "{:.3f}"))


def density(results):
    """The share of the bottom layer's units a parse keeps on (TopK, then ReLU), over the
    training chains, as a percentage string."""
    return f"{100 * results['nonzero_2']:.1f}%" if "nonzero_2" in results else "?"


def tradeoff_table(records):
    """Markdown: one row per K of the sweep, then pixel PCA's dissection."""
    lines = ["| run | K | bottom units on | " + " | ".join(h for _, h, _ in TRADEOFF) + " |",
             "|---" * (3 + len(TRADEOFF)) + "|"]
    for kind, record in sweep(records):
        r = record["results"]
        cells = [fmt.format(r[key]) if key in r else "" for key, _, fmt in TRADEOFF]
        lines.append(f"| {kind} | {','.join(map(str, r['topk']))} | {density(r)} | "
                     + " | ".join(cells) + " |")
    r = records["sparse"]["results"]
    if "attribute_auc_pca" in r:
        cells = [fmt.format(r[key.replace("_2", "_pca")])
                 if key in ("attribute_auc_2", "attribute_balanced_accuracy_2") else ""
                 for key, _, fmt in TRADEOFF]
        cells[0] = ""
        lines.append("| pixel PCA | d components | | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def tradeoff_figure(records, path):
    """Held-out PSNR (x) against the bottom units' mean attribute AUC and against the
    samples' Fréchet distance, one point per K of the sweep; pixel PCA's AUC as a line."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot
    points = sweep(records)
    psnr = [r["results"]["psnr_heldout"] for _, r in points]
    labels = [f"{k}\n{density(r['results'])}" for k, r in points]
    figure, axes = pyplot.subplots(1, 2, figsize=(9, 3.6), dpi=110)
    panels = (("attribute_auc_2", "mean held-out AUC, best bottom unit"),
              ("frechet_samples", "Fréchet distance of samples (lower is better)"))
    for axis, (key, title) in zip(axes, panels):
        values = [r["results"].get(key, np.nan) for _, r in points]
        axis.plot(psnr, values, "o-", color="tab:blue")
        for x, y, label in zip(psnr, values, labels):
            axis.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4),
                          fontsize=7)
        if key == "attribute_auc_2" and "attribute_auc_pca" in records["sparse"]["results"]:
            axis.axhline(records["sparse"]["results"]["attribute_auc_pca"], ls="--",
                         color="gray", label="pixel PCA")
            axis.legend(fontsize=7, loc="best")
        axis.ticklabel_format(useOffset=False)
        axis.set_xlabel("held-out PSNR (dB)")
        axis.set_title(title, fontsize=9)
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    pyplot.close(figure)
    return path


def report(all_records):
    """Markdown: per dataset the evaluate table (and on faces the trade-off), then the
    commands and wall times."""
    lines = []
    for name, records in all_records.items():
        lines += [f"## {name}", "", evaluation.markdown_table(
            [records[k]["results"] for k in records]), ""]
        lines.append("Columns: " + ", ".join(records) + ".")
        lines.append("")
        if name == "faces" and "attribute_auc_2" in records["sparse"]["results"]:
            lines += ["### The trade-off across K", "", tradeoff_table(records), ""]
        for kind, r in records.items():
            took = f"{r['train_s'] / 60:.0f} min" if r["train_s"] else "time not recorded"
            lines += [f"- {kind}: step {r['step']}, trained in {took}, evaluated in "
                      f"{r['evaluate_s'] / 60:.1f} min: `{r['command']}`"]
        lines.append("")
    return "\n".join(lines)


def main(argv):
    del argv
    try:
        settings = cli.inference_settings(FLAGS)
        bricks = FLAGS.bricks
        made = [f for f in ("bricks", "brick_photos", "make_bricks") if getattr(FLAGS, f)]
        if len(made) > 1:
            raise UserError(f"give one of --bricks, --brick_photos, --make_bricks, not both "
                            f"({', '.join('--' + f for f in made)})")
        if FLAGS.make_bricks:
            bricks = make_bricks(os.path.join(FLAGS.runs, "brick_crops"), FLAGS.num_bricks)
        if FLAGS.brick_photos:
            bricks = crop_photos(FLAGS.brick_photos,
                                 os.path.join(FLAGS.runs, "brick_photo_crops"),
                                 FLAGS.num_bricks)
        if not FLAGS.faces and not FLAGS.cars and not bricks:
            raise UserError("nothing to do: pass --faces=DIR, --cars=DIR and/or --bricks=DIR "
                            "(or --brick_photos=DIR, --make_bricks)")
        unknown = set(FLAGS.face_trials) - set(TRIALS)
        if unknown:
            raise UserError(f"unknown --face_trials {', '.join(sorted(unknown))}; use "
                            f"{', '.join(TRIALS)}")
        os.makedirs(FLAGS.runs, exist_ok=True)
        os.makedirs(FLAGS.docs, exist_ok=True)
        DATA_NAMES.update({os.path.abspath(d): n.upper() for n, d in (
            ("faces", FLAGS.faces), ("cars", FLAGS.cars), ("bricks", bricks)) if d})
        all_records, figures = {}, []
        for name, data_dir, flagfile, steps, num_images in (
                ("faces", FLAGS.faces, FLAGS.faces_flagfile, FLAGS.face_steps,
                 FLAGS.face_images),
                ("cars", FLAGS.cars, FLAGS.cars_flagfile, FLAGS.car_steps, FLAGS.car_images),
                ("bricks", bricks, FLAGS.bricks_flagfile, FLAGS.brick_steps, None)):
            if data_dir:
                all_records[name], written = experiment(name, data_dir, flagfile, steps,
                                                        settings, num_images)
                figures += written
    except UserError as e:
        sys.exit(f"paper_experiments: error: {e}")
    text = report(all_records)
    with open(os.path.join(FLAGS.docs, "real_images.md"), "w") as f:
        f.write("# Real images: the tables of benchmarks/paper_experiments.py\n\n" + text)
    with open(os.path.join(FLAGS.runs, "paper_experiments.json"), "w") as f:
        json.dump({name: {k: {**r, "results": {key: v for key, v in r["results"].items()
                                                 if key != "inference"}}
                          for k, r in records.items()}
                   for name, records in all_records.items()}, f, indent=2)
    print(text)
    print("Wrote " + ", ".join(figures))


if __name__ == "__main__":
    app.run(main)
