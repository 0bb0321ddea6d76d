"""Exports a generator, or the latest checkpoint of a training run, as the next version
of a TF Serving model: the signatures (signatures.py) written atomically (versions.py)."""

from sparse_gen_tf.model.layers import TopK
from sparse_gen_tf.serving.signatures import ReconstructSettings, build_archive, describe
from sparse_gen_tf.serving.versions import choose_version, write_version
from sparse_gen_tf.training import run


def export_generator(generator, export_base, *, step_size, sigma,
                     settings=ReconstructSettings(), chains=None, prior=None, version=None,
                     source=None, encoder=None):
    """Exports generator as the next (or the given) version in export_base; returns its path.

    chains: optional [N, d] persistent chains of the training images, from which
    `settings.bank` makes the starting points of `reconstruct`'s search. prior: the
    fitted prior that `sample` draws from (`model.prior`); N(0, I) if None. encoder: the
    run's inference network (`model.encoder`), for the amortized `reconstruct`
    (settings.method "auto" takes it when given). Each TopK keeps its configured K, also
    in a learner's generator under the K warm-up (`TopK.fixed`). Raises UserError for
    "amortized" without one (`ReconstructSettings.resolve`), or see `choose_version`.
    """
    settings = settings.resolve(encoder)
    version = choose_version(export_base, version)
    baked = dict(settings=settings, step_size=float(step_size), sigma=float(sigma),
                 bank=settings.bank(chains), prior=prior, encoder=encoder)
    # A learner's generator may be under its K warm-up: the export keeps Eq. 1's K.
    with TopK.fixed(generator.topks):
        archive = build_archive(generator, **baked)
        return write_version(archive, export_base, version,
                             describe(generator, source=source, **baked))


def export_workdir(workdir, export_base, *, settings=ReconstructSettings(), version=None,
                   fit_prior=False):
    """Exports the latest checkpoint of the training run in workdir, with its inference
    network if it has one (`run.open_run`); returns the path.

    fit_prior: a checkpoint without a prior fitted to its generator (from before the
    prior was saved with the model, or written between two of training's fits and
    marked stale) is refused unless this is True, which fits the prior from its chains
    for the export. Raises UserError if workdir holds no run or checkpoint, or no
    fitted prior without fit_prior (`run.open_run`), or see `export_generator`.
    """
    opened = run.open_run(workdir, fit_prior=fit_prior)
    return export_generator(opened.generator, export_base, settings=settings,
                            step_size=opened.langevin.step_size, sigma=opened.langevin.sigma,
                            chains=opened.chains.numpy(), prior=opened.prior,
                            version=version, source=opened.checkpoint,
                            encoder=opened.encoder)
