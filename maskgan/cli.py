"""The `maskgan` command: parses and dispatches. No logic of its own."""

from __future__ import annotations

import argparse
import sys

EPILOG = "Storage URIs are local directories or s3://bucket/prefix (credentials from the usual AWS_* variables)."


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="maskgan", description="Design facemasks that defeat face recognition (GAN on Ray).",
                                epilog=EPILOG)
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    d = sub.add_parser("demo", help="run the whole pipeline on synthetic data, locally (about 3 minutes)")
    d.add_argument("--out", default="demo_out", help="folder for data, weights and runs (default: demo_out)")
    d.add_argument("--identities", type=int, default=40, help="synthetic identities (default: 40)")
    d.add_argument("--epochs", type=int, default=8, help="GAN epochs (default: 8)")
    d.add_argument("--experiment", default="exp1", choices=["exp0", "exp1", "exp2", "exp3"])
    d.add_argument("--generator", default="fc3", choices=["fc3", "fc_deep", "conv"])

    data = sub.add_parser("data", help="create or prepare datasets").add_subparsers(dest="data_cmd", required=True,
                                                                                      metavar="ACTION")
    s = data.add_parser("synth", help="write a synthetic face dataset in the shard format")
    s.add_argument("--identities", type=int, required=True, help="number of identities")
    s.add_argument("--images-per-identity", type=int, required=True, help="probe photos per identity")
    s.add_argument("--adapt-per-identity", type=int, default=4,
                   help="extra photos per identity for `recognizer adapt` (default: 4)")
    s.add_argument("--out", required=True, help="output URI (local dir or s3://bucket/prefix)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--size", type=int, default=128, help="image size in pixels (default: 128)")

    pj = sub.add_parser("projector", help="the alpha-predicting projector").add_subparsers(dest="proj_cmd", required=True,
                                                                                           metavar="ACTION")
    pt = pj.add_parser("train", help="fit the projector to alpha labels; prints held-out IoU")
    pt.add_argument("--data", required=True, help="prepared dataset URI")
    pt.add_argument("--out", required=True, help="where to write the projector checkpoint (path or s3://)")
    pt.add_argument("--epochs", type=int, default=10)
    pt.add_argument("--max-images", type=int, default=2000)

    rc = sub.add_parser("recognizer", help="the face recogniser").add_subparsers(dest="rec_cmd", required=True,
                                                                                 metavar="ACTION")
    ra = rc.add_parser("adapt", help="fit the recogniser head on a synthetic dataset's adapt photos")
    ra.add_argument("--data", required=True, help="dataset URI with an 'adapt' set (synthetic data)")
    ra.add_argument("--out", required=True, help="where to write the adapted weights (path or s3://)")
    ra.add_argument("--base", default="random", help="starting weights: random, vggface2, casia-webface, path, s3://")
    ra.add_argument("--steps", type=int, default=300)

    t = sub.add_parser("train", help="train the GAN on Ray Train")
    t.add_argument("--config", required=True, help="run config (YAML or JSON); see configs/")
    t.add_argument("--resume", action="store_true", help="continue the run named in the config from its last checkpoint")

    pr = data.add_parser("prepare", help="FFHQ + MaskedFace-Net (local or s3://) -> prepared shards, as a Ray Data job")
    pr.add_argument("--ffhq", required=True, help="FFHQ images URI (NNNNN.png, flat or in thousand-folders)")
    pr.add_argument("--maskedfacenet", required=True, help="MaskedFace-Net URI (NNNNN_Mask*.jpg, flat or in folders)")
    pr.add_argument("--out", required=True, help="output URI for shards + manifest")
    pr.add_argument("--size", type=int, default=128, help="image size in pixels (default: 128)")
    pr.add_argument("--shard-size", type=int, default=1024, help="rows per shard (default: 1024)")
    pr.add_argument("--max-bad-fraction", type=float, default=0.01,
                    help="fail when more than this fraction of inputs is unusable (default: 0.01)")
    pr.add_argument("--endpoint-url", default=None, help="S3-compatible endpoint (else AWS_ENDPOINT_URL)")

    tu = sub.add_parser("tune", help="Ray Tune sweep over experiments and generator architectures")
    tu.add_argument("--space", required=True, help="search space YAML (see tune/spaces/)")
    tu.add_argument("--storage", default=None, help="where the sweep lives (default: the space's base storage)")
    tu.add_argument("--num-samples", type=int, default=1, help="samples per grid point (default: 1)")
    tu.add_argument("--scheduler", choices=["asha", "pbt", "none"], default="asha",
                    help="asha (default): stop weak trials early; pbt: clone strong trials' checkpoints into weak "
                         "ones with mutated learning rates and lambda (the space's pbt: section); none: run all")
    tu.add_argument("--resume", action="store_true", help="continue an interrupted sweep; finished trials are kept")

    ex = sub.add_parser("export", help="upload the best checkpoint of a run or sweep to s3:// with a model card")
    ex.add_argument("--run", required=True, help="train run or sweep URI")
    ex.add_argument("--to", required=True, help="s3://bucket/prefix (or a local directory)")
    ex.add_argument("--metric", default="acc/val/generated", help="checkpoint metric to rank by (lower is better)")

    sa = sub.add_parser("sample", help="sample new designs from an exported model (or a run)")
    sa.add_argument("--from", dest="source", required=True, help="export URI (s3://bucket/prefix) or run URI")
    sa.add_argument("--n", type=int, default=16, help="number of designs (default: 16)")
    sa.add_argument("--out", required=True, help="PNG file to write")

    sb = sub.add_parser("submit", help="submit a maskgan command to a Ray cluster as a job and follow it")
    sb.add_argument("--address", default=None, help="Ray dashboard URL (default: RAY_ADDRESS or http://127.0.0.1:8265)")
    sb.add_argument("--working-dir", default=".", help="directory shipped as the job's runtime env (default: .)")
    sb.add_argument("--no-wait", action="store_true", help="print the job id and return")
    sb.add_argument("entrypoint", nargs=argparse.REMAINDER, help="-- maskgan train --config ...")

    gr = sub.add_parser("grafana", help="Grafana dashboard").add_subparsers(dest="graf_cmd", required=True,
                                                                          metavar="ACTION")
    gp = gr.add_parser("push", help="create or update the maskgan dashboard (token from GRAFANA_TOKEN)")
    gp.add_argument("--url", required=True, help="Grafana base URL")

    e = sub.add_parser("evaluate", help="score a run: accuracy per split and row, with 95%% intervals")
    e.add_argument("--run", required=True, help="run folder URI (train.storage/train.name)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _dispatch(args)
    except KeyboardInterrupt:
        print("maskgan: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # one line for known user errors; a traceback for bugs
        if _is_user_error(e):
            print(f"maskgan: error: {e}", file=sys.stderr)
            return 2
        raise


def _is_user_error(e: Exception) -> bool:
    # Errors about the user's input (config, URIs, files, data) set `user_error = True`: one line, no traceback.
    return bool(getattr(e, "user_error", False))


def _dispatch(args) -> int:
    if args.cmd == "demo":
        from maskgan import demo

        demo.run(args.out, identities=args.identities, epochs=args.epochs, experiment=args.experiment,
                 generator=args.generator)
        return 0
    if args.cmd == "data" and args.data_cmd == "synth":
        from data_loader import synth
        from maskgan.config import ConfigError

        try:
            m = synth.generate(args.out, args.identities, args.images_per_identity, args.adapt_per_identity,
                               seed=args.seed, size=args.size)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        print(f"wrote {sum(s['rows'] for s in m['sets'].values())} rows "
              "(" + ", ".join(f"{k}: {v['rows']}" for k, v in m["sets"].items()) + f") to {args.out}")
        return 0
    if args.cmd == "data" and args.data_cmd == "prepare":
        from data_loader import prepare

        prepare.run(args.ffhq, args.maskedfacenet, args.out, size=args.size, shard_size=args.shard_size,
                    max_bad_fraction=args.max_bad_fraction, endpoint=args.endpoint_url)
        return 0
    if args.cmd == "tune":
        from tune import sweep

        sweep.run(args.space, storage_uri=args.storage, num_samples=args.num_samples, scheduler=args.scheduler,
                  resume=args.resume)
        return 0
    if args.cmd == "export":
        from tune import export

        export.export(args.run, args.to, metric=args.metric)
        return 0
    if args.cmd == "sample":
        from tune import export

        export.sample(args.source, n=args.n, out=args.out)
        return 0
    if args.cmd == "submit":
        from cluster import submit

        entry = args.entrypoint[1:] if args.entrypoint[:1] == ["--"] else args.entrypoint
        return submit.submit(entry, address=args.address, working_dir=args.working_dir, wait=not args.no_wait)
    if args.cmd == "grafana":
        from cluster import grafana

        result = grafana.push_dashboard(args.url)
        print(f"dashboard pushed: {result.get('url', result)}")
        return 0
    if args.cmd == "projector":
        from maskgan import pretrain

        pretrain.train_projector(args.data, args.out, epochs=args.epochs, max_images=args.max_images)
        return 0
    if args.cmd == "recognizer":
        from maskgan import pretrain

        pretrain.adapt_recognizer(args.data, args.out, base=args.base, steps=args.steps)
        return 0
    if args.cmd == "train":
        from maskgan import config, train

        cfg = config.load(args.config)
        result = train.fit(cfg, resume=args.resume)
        print(f"run: {result.run_uri}\ncheckpoint: {result.checkpoint_uri}")
        return 0
    if args.cmd == "evaluate":
        from maskgan import evaluate

        report = evaluate.evaluate_run(args.run)
        print(evaluate.report_markdown(report))
        return 0
    raise AssertionError(args)


if __name__ == "__main__":
    sys.exit(main())
