"""`maskgan demo`: the whole product on a laptop, end to end, with embedded defaults.

synthetic faces -> local directory as object storage -> projector -> recogniser adaptation -> GAN on Ray
Train (2 CPU workers) -> evaluation -> report.json, report.md, designs.png and checkpoints in one run folder.
"""

from __future__ import annotations

import os
import time

from data_loader import storage, synth
from maskgan.config import recipes
from maskgan.evaluation import realism
from maskgan.models import dlib_recognizer
from maskgan.models.zoo import ZooMissing, registry
from maskgan.reporting import runner
from maskgan.reporting.headline import headline, seeds_table
from maskgan.training import pretrain, train

DEMO_UNIVERSAL_K = 4  # eval.universal_k (its default is 8): keeps the demo near 5 minutes
# Real pretrained recognisers (maskgan.models.zoo, converted at install time by `maskgan recognizers fetch`): the
# generator attacks the two MobileFaceNets white-box (each its own fine-tuned last layer) together with the
# adapted stand-in, and is judged on two of other families it never saw: dlib's ResNet (the torch port, and
# dlib's own runtime beside it as a cross-check) and HSE's MobileNet.
DEMO_SURROGATES = ("zoo:faceplugin", "zoo:expo")
DEMO_HELD_OUT = ("zoo:dlib", "zoo:hse", "dlib")
# Where the zoo's converted weights are missing, the demo still runs on today's stand-ins, and says so.
STAND_IN_SURROGATES = ("random:11",)
STAND_IN_HELD_OUT = ("random:7",)


def _available(specs, log) -> list[str]:
    """The specs whose recogniser can be built here; each missing one named in one line."""

    out = []
    for spec in specs:
        try:
            if spec == "dlib":
                dlib_recognizer.load()
            else:
                registry.build(spec.split(":", 1)[1])
        except (dlib_recognizer.DlibMissing, ZooMissing) as e:
            log(f"note: the demo scores no {spec} column ({e})")
            continue
        out.append(spec)
    return out


def held_out(log=print) -> list[str]:
    """DEMO_HELD_OUT, less what cannot be built here (said in one line each: the demo still runs)."""
    found = _available(DEMO_HELD_OUT, log)
    return found if any(s.startswith("zoo:") for s in found) else [*STAND_IN_HELD_OUT, *found]


def surrogates_here(log=print) -> list[str]:
    """DEMO_SURROGATES where their weights are converted, else the random stand-in."""
    found = _available(DEMO_SURROGATES, log)
    return found or list(STAND_IN_SURROGATES)


# The demo's people: 80 identities give 16 test identities (a fifth), 2 photos each keep the probe count (and so
# the demo's time) where 40 x 4 had it; the adapt pool stays at 40 people.
DEMO_IDENTITIES, DEMO_PHOTOS, DEMO_ADAPT_IDENTITIES = 80, 2, 40
# No near-twins, judged by the real recognisers the demo attacks (the held-out ones are reported as they come):
# drawn people have many more look-alikes than real people, and a look-alike pair sets the FAR threshold. At 0.65
# the demo's 80 people pass over about as many again (200 people: 317 of 517 drawn; docs/data.md).
DEMO_DISTINCT_CAP = 0.65


def distinct_judges(surrogates) -> list[str]:
    """The zoo recognisers among the attacked ones: they decide which drawn people are near-twins."""
    return [s.split(":", 1)[1] for s in surrogates if s.startswith("zoo:")]


def prepare(cfg, identities: int = DEMO_IDENTITIES, images_per_identity: int = DEMO_PHOTOS, log=print) -> None:
    """Steps 1-3 of the demo, into the places `cfg` names: synthetic faces, the projector, the recogniser
    (bench/diversity.py reuses them). The people have no near-twins under the zoo recognisers cfg attacks."""
    judges = distinct_judges(cfg.model.recognizers)
    distinct = realism.Distinct.under(judges, DEMO_DISTINCT_CAP) if judges else None
    log(f"[1/5] synthetic faces: {identities} identities x {images_per_identity} photos -> {cfg.data.uri}"
        + (f"; no near-twins ({distinct.rule})" if distinct else ""))
    m = synth.generate(cfg.data.uri, identities, images_per_identity, adapt_per_identity=4, seed=cfg.train.seed,
                       log=log, adapt_identities=min(identities, DEMO_ADAPT_IDENTITIES),
                       keep=distinct.keep if distinct else None, keep_rule=distinct.rule if distinct else None)
    if distinct:
        log(f"no near-twins: {m['source']['passed_over']} drawn people passed over")
    log(f"[2/5] projector -> {cfg.model.projector}")
    pretrain.train_projector(cfg.data.uri, cfg.model.projector, epochs=cfg.projector.epochs,
                             batch_size=cfg.projector.batch_size, lr=cfg.projector.lr,
                             max_images=cfg.projector.max_images, arch=cfg.projector.arch, log=log)
    log(f"[3/5] recogniser: random trunk, head adapted on a pool of other synthetic identities (never in the "
        f"gallery) -> {cfg.model.recognizer_weights}")
    pretrain.adapt_recognizer(cfg.data.uri, cfg.model.recognizer_weights, base="random", log=log)


def run(out: str = "demo_out", identities: int = DEMO_IDENTITIES, images_per_identity: int = DEMO_PHOTOS,
        epochs: int = 8,
        experiment: str = "exp1", generator: str = "fc3",
        surrogates: list[str] | tuple | None = None, seeds: int = 1, log=print) -> dict:
    """The demo: one run (training seed 0), or `seeds` runs on the same data (training seeds 0..seeds-1) and
    one table of their verdicts; returns the (last) report. `surrogates`: None for the demo's own choice
    (the real recognisers where fetched, else the stand-in)."""
    t0 = time.time()
    os.environ.setdefault("MASKGAN_METRICS_FLUSH_S", "0")  # a laptop demo has no Prometheus to wait for
    out = os.path.abspath(out)
    surrogates = surrogates_here(log) if surrogates is None else surrogates
    cfg = recipes.debug_cpu(out).replace(train={"epochs": epochs},
                                        objective={"experiment": experiment},
                                        model={"generator": generator, "recognizers": list(surrogates)},
                                        eval={"held_out": held_out(log), "max_probes": 32,
                                              "universal_k": DEMO_UNIVERSAL_K})
    log("maskgan demo: the whole pipeline on synthetic data, about 5 minutes on a 2-core machine "
        + (f"per seed, {seeds} training seeds " if seeds > 1 else "") + "(the wall time is printed at the end)")
    prepare(cfg, identities, images_per_identity, log=log)
    reports = []
    for seed in range(seeds):
        seeded = cfg if seeds == 1 else cfg.replace(train={"seed": seed, "name": f"{cfg.train.name}_seed{seed}"})
        reports.append(_train_and_evaluate(seeded, log))
    if seeds > 1:
        log("")
        log(seeds_table(reports, "test"))
    log(f"data:         {cfg.data.uri}")
    log(f"done in {time.time() - t0:.0f} s (wall time, measured)")
    return reports[-1]


def _train_and_evaluate(cfg, log=print) -> dict:
    """Steps 4-5 for one config: GAN training, then evaluation; prints the headline and where report.md and the
    rest went (report.md's tables are a page long: the terminal gets the verdicts, the file the detail)."""
    run_loc = train.run_location(cfg)
    if storage.exists(run_loc):
        storage.delete_dir(run_loc)  # the demo always starts fresh; real runs refuse to overwrite
    log(f"[4/5] GAN training on Ray Train ({cfg.train.num_workers} workers, {cfg.objective.experiment}, "
        f"{cfg.model.generator}, {cfg.train.epochs} epochs, training seed {cfg.train.seed}"
        + (f", attacking {len(cfg.model.recognizers) + 1} recognisers together" if cfg.model.recognizers else "") + ")")
    result = train.fit(cfg, log=log)
    log(f"[5/5] evaluation of {result.run_uri}")
    report = runner.evaluate_run(result.run_uri, log=log)
    log("")
    log(headline(report, "test"))
    log("")
    log(f"run folder:   {result.run_uri}")
    log(f"report:       {os.path.join(result.run_uri, 'report.md')} (every table), report.json and report.html")
    log(f"designs:      {os.path.join(result.run_uri, 'designs.png')}")
    log(f"checkpoint:   {result.checkpoint_uri}")
    return report
