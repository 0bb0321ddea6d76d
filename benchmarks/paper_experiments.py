"""The paper's experiments on real images, sparse against dense: faces (Figs. 2-3) and
brick walls (Fig. 4). Regenerates the README's "Real images" section.

    python benchmarks/paper_experiments.py --faces=DIR [--bricks=DIR | --make_bricks]

For each dataset given it trains two runs under --runs, as a user would with train.py
(the exact commands are printed and kept in RUNS/paper_experiments.json):

  faces_sparse, faces_dense     --flagfile=celeba.flags --dataset=folder --data_dir=FACES
                                --heldout=N --train_steps=S; dense is --topk=K_i = h_i w_i c_i
                                (every unit of every feature map, i.e. 1024,2048 for faces)
  bricks_sparse, bricks_dense   the same with --flagfile=bricks.flags

A workdir that already holds a checkpoint of step S or later is reused, not retrained (with
--notrain any checkpoint is), so a second call only re-scores and redraws. Then it runs
`evaluate` on every run (held-out PSNR through inference.infer and the exported
reconstruct, both with --refine_steps=200 --refine_step_size=0.1 unless told otherwise;
training PSNR, sparsity, location specificity, sharpness), writes
DOCS/real_images.md (the tables, commands and wall times) and these figures, sparse left
and dense right unless said otherwise:

  DOCS/<data>_kernels_bottom.png       Fig. 2a, bottom kernels normalised per kernel
  DOCS/<data>_kernels_bottom_raw.png   the same as they paint, tanh(bias + s ker)
  DOCS/<data>_kernels_top.png          Fig. 2b, the strongest top units through the bottom
                                       layer, normalised per unit
  DOCS/<data>_parse.png                Fig. 3, the parse of held-out image 0 (normalised
                                       OR nodes), sparse above dense
  DOCS/<data>_reconstructions.png      rows: held-out images, sparse, dense reconstructions
  DOCS/<data>_samples.png              g(z), z ~ N(0, I): sparse rows above dense rows

--make_bricks writes --num_bricks random 64x64 crops of skimage.data.brick() (512x512
grey) into RUNS/brick_crops; it needs scikit-image (pip install .[examples]).
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

from sparse_gen_tf import cli
from sparse_gen_tf.explanation import evaluation
from sparse_gen_tf.explanation import visualize
from sparse_gen_tf.learning import inference
from sparse_gen_tf.data import pipeline
from sparse_gen_tf.errors import UserError
from sparse_gen_tf.explanation.figures import image_grid, write_png
from sparse_gen_tf.training.run import latest_checkpoint, load_run, read_config

FLAGS = flags.FLAGS
flags.DEFINE_string("faces", None, "Folder of aligned face images (e.g. 64x64 CelebA "
                    "crops); omit to skip the faces.")
flags.DEFINE_string("bricks", None, "Folder of brick-wall crops; omit to skip the bricks.")
flags.DEFINE_bool("make_bricks", False, "Write random crops of skimage.data.brick() into "
                  "RUNS/brick_crops and use them as --bricks (needs scikit-image).")
flags.DEFINE_integer("num_bricks", 1000, "Crops --make_bricks writes.", lower_bound=1)
flags.DEFINE_string("runs", "runs/paper", "Where the training runs go (one workdir each).")
flags.DEFINE_string("docs", "docs", "Where the figures and real_images.md go.")
flags.DEFINE_string("faces_flagfile", os.path.join(ROOT, "celeba.flags"),
                    "Flag file of the face runs.")
flags.DEFINE_string("bricks_flagfile", os.path.join(ROOT, "bricks.flags"),
                    "Flag file of the brick runs.")
flags.DEFINE_integer("face_steps", 1000, "Training steps of each face run.", lower_bound=1)
flags.DEFINE_integer("brick_steps", 1000, "Training steps of each brick run.", lower_bound=1)
flags.DEFINE_integer("heldout", 50, "Images held out of training (the last files).",
                     lower_bound=1)
flags.DEFINE_integer("num_heldout", 50, "Held-out images evaluate scores (and training "
                     "images it runs the same inference on).", lower_bound=1)
flags.DEFINE_bool("train", True, "Train runs that lack the final checkpoint; --notrain "
                  "scores whatever checkpoint each workdir has.")
flags.DEFINE_bool("served", True, "Also score the exported reconstruct signature.")
cli.define_inference_flags()
# Noise-free refinement of the winning chain, at a third of the training δ = 0.3 (at δ
# itself gradient ascent overshoots): what it adds on faces and bricks is in the README,
# "Real images".
FLAGS.set_default("refine_steps", 200)
FLAGS.set_default("refine_step_size", 0.1)

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


def train_command(flagfile, data_dir, steps, workdir, topk=None):
    """The train.py command line of one run, as a list."""
    command = [sys.executable, os.path.join(ROOT, "train.py"), f"--flagfile={flagfile}",
               "--dataset=folder", f"--data_dir={data_dir}", f"--heldout={FLAGS.heldout}",
               f"--train_steps={steps}", f"--workdir={workdir}"]
    return command + ([f"--topk={topk}"] if topk else [])


def shown(command):
    """A train command as the README prints it: paths inside the repository relative."""
    return " ".join(c.replace(ROOT + os.sep, "") for c in command[1:])


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


def strongest_top_units(generator, z, num, normalised):
    """Grid of the num top units with the largest coefficient over the parses of z, each
    through the bottom layer in image space (Fig. 2b), strongest first."""
    best, terms = visualize.strongest_terms(generator, z, 1)
    order = np.argsort(-best)[:num]
    order = order[best[order] > 0]
    drawn = (visualize.normalise_each(terms[order]) if normalised
             else visualize.paint(generator, terms[order]))
    scale = max(1, 64 // drawn.shape[1])
    return image_grid(np.stack([visualize.upscale(d, scale) for d in drawn]), columns=8,
                      pad=2)


def draw_figures(name, opened, docs, settings, num_images=8, num_samples=16, seed=0):
    """Writes DOCS/<name>_*.png (see the module docstring) for {kind: opened run}."""
    pictures = {}
    heldout = None
    for kind, run in opened.items():
        generator = run.model.generator
        z = visualize.sample_latents(generator, 128, seed)
        pictures[kind] = {
            "kernels_bottom": kernel_grid(generator, z, normalised=True),
            "kernels_bottom_raw": kernel_grid(generator, z, normalised=False),
            "kernels_top": strongest_top_units(generator, z, 32, normalised=True)}
        images, _ = pipeline.heldout_images(run.config, num_images)
        images = pipeline.to_model_range(images).numpy()
        heldout = images
        inferred = inference.reconstruct(run.model, images, settings=settings,
                                         seed=seed).numpy()
        pictures[kind]["reconstructions"] = generator(inferred).numpy()
        pictures[kind]["parse"] = visualize.parse_figure(generator, inferred[0],
                                                         normalised=True)
        pictures[kind]["samples"] = generator(z[:num_samples]).numpy()
    written = []

    def write(suffix, image):
        path = os.path.join(docs, f"{name}_{suffix}.png")
        write_png(path, image)
        written.append(path)

    sparse, dense = pictures["sparse"], pictures["dense"]
    for key in ("kernels_bottom", "kernels_bottom_raw", "kernels_top"):
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


def experiment(name, data_dir, flagfile, steps, settings):
    """Trains (or reuses), scores and draws the sparse and dense runs of one dataset;
    returns {kind: {"command", "train_s", "results"}}."""
    if not os.path.isdir(data_dir):
        raise UserError(f"--{name}={data_dir} is not a folder; pass a folder of images")
    if not os.path.exists(flagfile):
        raise UserError(f"--{name}_flagfile={flagfile} does not exist")
    records, opened = {}, {}
    for kind in KINDS:
        workdir = os.path.join(FLAGS.runs, f"{name}_{kind}")
        topk = dense_topk(os.path.join(FLAGS.runs, f"{name}_sparse")) if kind == "dense" else None
        command = train_command(flagfile, data_dir, steps, workdir, topk)
        seconds = train_or_reuse(command, workdir, steps)
        start = time.time()
        results = evaluation.evaluate(workdir, num_heldout=FLAGS.num_heldout, settings=settings,
                                    baseline=False, served=FLAGS.served)
        records[kind] = {"command": "python " + shown(command), "train_s": seconds,
            "step": checkpoint_step(workdir), "evaluate_s": time.time() - start,
            "results": results}
        opened[kind] = load_run(workdir)
    figures = draw_figures(name, opened, FLAGS.docs, settings)
    return records, figures


def report(all_records):
    """Markdown: per dataset the evaluate table, then the commands and wall times."""
    lines = []
    for name, records in all_records.items():
        lines += [f"## {name}", "", evaluation.markdown_table(
            [records[k]["results"] for k in KINDS]), ""]
        for kind in KINDS:
            r = records[kind]
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
        if FLAGS.make_bricks:
            if bricks:
                raise UserError("give --bricks=DIR or --make_bricks, not both")
            bricks = make_bricks(os.path.join(FLAGS.runs, "brick_crops"), FLAGS.num_bricks)
        if not FLAGS.faces and not bricks:
            raise UserError("nothing to do: pass --faces=DIR and/or --bricks=DIR "
                            "(or --make_bricks)")
        os.makedirs(FLAGS.runs, exist_ok=True)
        os.makedirs(FLAGS.docs, exist_ok=True)
        all_records, figures = {}, []
        for name, data_dir, flagfile, steps in (
                ("faces", FLAGS.faces, FLAGS.faces_flagfile, FLAGS.face_steps),
                ("bricks", bricks, FLAGS.bricks_flagfile, FLAGS.brick_steps)):
            if data_dir:
                all_records[name], written = experiment(name, data_dir, flagfile, steps,
                                                        settings)
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
