"""One function per `maskgan` command: call the library with the parsed flags, print its one-line result.

Imports are inside each function so `maskgan --help` and light commands do not pay for torch or Ray.
A function returns the exit code, or None for 0.
"""

from __future__ import annotations


def demo(a) -> None:
    from maskgan import demo

    demo.run(a.out, identities=a.identities, epochs=a.epochs, experiment=a.experiment, generator=a.generator,
             surrogates=a.surrogates, seeds=a.seeds)


def data_synth(a) -> None:
    from data_loader import synth
    from maskgan.config import ConfigError

    distinct = _distinct(a.distinct, a.distinct_under) if a.distinct is not None else None
    keep = distinct.keep if distinct else None
    try:
        if a.layout == "identities":
            t = synth.write_identity_tree(a.out, a.identities, a.images_per_identity, seed=a.seed, size=a.size,
                                          keep=keep)
            print(f"wrote {t['photos']} photos of {t['identities']} identities to {t['uri']}"
                  + (f" ({t['passed_over']} near-twins passed over)" if distinct else ""))
            return
        m = synth.generate(a.out, a.identities, a.images_per_identity, a.adapt_per_identity, seed=a.seed, size=a.size,
                           adapt_identities=a.adapt_identities, keep=keep, keep_rule=distinct and distinct.rule)
    except ValueError as e:  # synth's argument checks: a user error, printed as one line
        raise ConfigError(str(e)) from None
    if distinct:
        print(f"no near-twins: {m['source']['passed_over']} people passed over ({distinct.rule})")
    print(f"wrote {sum(s['rows'] for s in m['sets'].values())} rows "
          "(" + ", ".join(f"{k}: {v['rows']}" for k, v in m["sets"].items()) + f") to {a.out}")


def _distinct(cap: float, names: str):
    """realism.Distinct judged by the named zoo recognisers, or a one-line error naming what is missing."""
    from maskgan.config import ConfigError
    from maskgan.evaluation.realism import Distinct
    from maskgan.models.zoo import ZooMissing

    try:
        return Distinct.under([n.strip() for n in names.split(",") if n.strip()], cap)
    except (ZooMissing, KeyError, ValueError) as e:
        raise ConfigError(f"--distinct-under {names}: {str(e).splitlines()[0]}") from None


def data_prepare(a) -> None:
    from data_loader import identities, prepare

    if a.identities:
        if a.ffhq or a.maskedfacenet:
            raise prepare.PrepareError("--identities replaces --ffhq/--maskedfacenet: give one source")
        identities.run(a.identities, a.out, size=a.size, shard_size=a.shard_size, max_bad_fraction=a.max_bad_fraction,
                       max_photos_per_identity=a.max_photos_per_identity,
                       min_photos_per_identity=a.min_photos_per_identity, endpoint=a.endpoint_url,
                       address=a.address)
        return
    if not (a.ffhq and a.maskedfacenet):
        raise prepare.PrepareError("data prepare needs --ffhq and --maskedfacenet, or --identities")
    prepare.run(a.ffhq, a.maskedfacenet, a.out, size=a.size, shard_size=a.shard_size,
                max_bad_fraction=a.max_bad_fraction, endpoint=a.endpoint_url, address=a.address)


def projector_train(a) -> None:
    from maskgan.training import pretrain

    pretrain.train_projector(a.data, a.out, epochs=a.epochs, max_images=a.max_images, arch=a.arch)


def recognizer_adapt(a) -> None:
    from maskgan.training import pretrain

    pretrain.adapt_recognizer(a.data, a.out, base=a.base, steps=a.steps)


def train(a) -> None:
    from maskgan import config
    from maskgan.training import train

    result = train.fit(config.load(a.config), resume=a.resume, address=a.address)
    print(f"run: {result.run_uri}\ncheckpoint: {result.checkpoint_uri}")


def evaluate(a) -> None:
    from maskgan.evaluation import evaluate
    from maskgan.reporting import report, runner

    if a.design_file:
        print(report.design_lines(a.design_file, evaluate.score_design_file(a.run, a.design_file)))
        return
    print(report.report_markdown(runner.evaluate_run(a.run, recognizers=zoo_flag(a.recognizers))))


def zoo_flag(text: str) -> list[str]:
    from maskgan.evaluation.embedders import specs_from_flag

    return specs_from_flag(text, "--recognizers")


def tune(a) -> None:
    from tune import sweep

    sweep.run(a.space, storage_uri=a.storage, num_samples=a.num_samples, scheduler=a.scheduler, resume=a.resume,
              address=a.address)


def export(a) -> None:
    from tune import export

    export.export(a.run, a.to, metric=a.metric)


def sample(a) -> None:
    from tune import sample

    sample.sample(a.source, n=a.n, out=a.out)


def submit(a) -> int:
    from cluster import submit

    entry = a.entrypoint[1:] if a.entrypoint[:1] == ["--"] else a.entrypoint  # argparse keeps the `--`
    return submit.submit(entry, address=a.address, working_dir=a.working_dir, wait=not a.no_wait)


def grafana_push(a) -> None:
    from cluster import grafana

    result = grafana.push_dashboard(a.url)
    print(f"dashboard pushed: {result.get('url', result)}")
