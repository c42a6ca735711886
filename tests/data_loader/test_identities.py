"""`maskgan data prepare --identities` over an identity-folder tree in a bucket on moto's S3 server.

The tree: synthetic identities (`data synth --layout identities`, landmarks from their sidecars) and one real
person, scikit-image's public-domain astronaut, whose flips, crops and exposure changes stand in for more
photos of her (found by dlib). Around them, what a real download has: a corrupt photo that would have been the
gallery's, an empty file, a truncated JPEG, a photo with no face, an identity with one photo, an identity left
with one usable photo, and files outside the layout.
"""

import io
import json
import re

import numpy as np
import pytest
from PIL import Image

import cli.main as cli
from data_loader import identities, landmark_mask, shards, storage, synth

BUCKET = "t-prepare-identities"
SIZE = 96  # small and fast, and facenet takes it (>= 75 px); the astronaut is cropped from 512 px, synthetic photos drawn at 128

pytest.importorskip("dlib")
skimage_data = pytest.importorskip("skimage.data")


def _encode(arr: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, fmt, **({"quality": 92} if fmt == "JPEG" else {}))
    return buf.getvalue()


def astronaut_versions() -> dict[str, np.ndarray]:
    """One real photo made into several: flipped, cropped off-centre, darker (as another exposure)."""
    a = skimage_data.astronaut()
    return {"a_orig.png": a, "b_flip.jpg": np.ascontiguousarray(a[:, ::-1]),
            "c_crop.png": np.ascontiguousarray(a[20:460, 40:480]), "d_dark.jpg": (a * 0.6).astype(np.uint8)}


def write_tree(base: str) -> dict:
    """The tree described above; returns what a correct prepare reports."""
    root = storage.resolve(base)
    synth.write_identity_tree(base, identities=7, photos_per_identity=3, seed=4, size=128, log=lambda *_: None)
    uri = root.join
    # synth-000005: one photo left -> skipped when listing; synth-000006: a truncated second photo -> one usable
    for rel in ("synth-000005/01.png", "synth-000005/02.png", "synth-000006/02.png", "synth-000006/02.json"):
        storage.delete_file(uri(rel))
    good = storage.read_bytes(uri("synth-000006/01.png"))
    storage.write_bytes(uri("synth-000006/01.jpg"), _encode(np.asarray(Image.open(io.BytesIO(good))), "JPEG")[:300])
    storage.delete_file(uri("synth-000006/01.png"))
    storage.write_bytes(uri("synth-000001/99.png"), b"")  # empty
    storage.write_bytes(uri("synth-000002/00.png"), b"not a png at all" * 10)  # the would-be gallery photo
    for name, arr in astronaut_versions().items():
        storage.write_bytes(uri(f"astronaut/{name}"), _encode(arr, "JPEG" if name.endswith(".jpg") else "PNG"))
    blank = np.full((256, 256, 3), 128, np.uint8)
    storage.write_bytes(uri("astronaut/e_blank.png"), _encode(blank, "PNG"))  # no face in it
    storage.write_text(uri("README.txt"), "LFW-style tree\n")
    storage.write_text(uri("synth-000003/extra/notes.png"), "too deep\n")
    return {
        "bad": {uri("synth-000001/99.png").uri, uri("synth-000002/00.png").uri, uri("synth-000006/01.jpg").uri},
        "no_face": {uri("astronaut/e_blank.png").uri},
        "too_few_photos": {uri("synth-000005").uri, uri("synth-000006").uri},
        "kept": ["astronaut", *(f"synth-{i:06d}" for i in range(5))],
        "photos": 7 * 3 - 3 + 1 + 5,  # synthetic files left, the empty one, the astronaut's five
        "probes": 4 * 2 + 1 + 3,  # four full synthetic identities, synth-000002 without 00, the astronaut
        "gallery": {"synth-000002": uri("synth-000002/01.png").uri, "astronaut": uri("astronaut/a_orig.png").uri},
        "ignored": {uri("README.txt").uri, uri("synth-000003/extra/notes.png").uri},
    }


@pytest.fixture(scope="module")
def prepared(s3_server, ray_session):
    storage.boto3_client().create_bucket(Bucket=BUCKET)
    ex = write_tree(f"s3://{BUCKET}/ids")
    logs: list[str] = []
    m = identities.run(f"s3://{BUCKET}/ids", f"s3://{BUCKET}/prepared", size=SIZE, shard_size=16,
                       max_bad_fraction=0.2, log=logs.append)
    return ex, m, logs


def test_identity_tree_prepares_with_exact_counts_and_listed_skips(prepared):
    ex, m, logs = prepared
    root = storage.resolve(f"s3://{BUCKET}/prepared")
    assert shards.read_manifest(root) == m
    kinds: dict[str, set] = {}
    for s in m["skipped"]:
        kinds.setdefault(s["kind"], set()).add(s["path"])
    assert kinds == {"bad": ex["bad"], "no_face": ex["no_face"], "too_few_photos": ex["too_few_photos"]}
    reasons = {s["path"]: s["reason"] for s in m["skipped"]}
    assert reasons[next(iter(ex["no_face"]))] == "no face"
    assert all(reasons[p].startswith("1 usable photo") for p in ex["too_few_photos"])
    assert m["identities"] == len(ex["kept"]) and sum(m["split_identities"].values()) == len(ex["kept"])
    assert m["sets"]["gallery"]["rows"] == len(ex["kept"])
    assert sum(m["sets"][s]["rows"] for s in shards.SPLITS) == ex["probes"]
    assert m["inputs"]["photos"] == ex["photos"] and set(m["inputs"]["ignored_examples"]) == ex["ignored"]
    assert m["bad"]["count"] == 3 and m["self_match"] is False
    assert m["source"]["landmarks"] == {"dlib": 4, "sidecar": 15}  # sidecars: 14 kept photos + synth-000006/00
    assert m["source"]["kind"] == "identities" and m["source"]["mask"]["name"] == "surgical-v1"
    assert m["source"]["detector"]["predictor"] == landmark_mask.PREDICTOR and m["source"]["crop"]["enlarge"] > 1
    for ident, uri in ex["gallery"].items():  # the first photo by name that decodes and has a face
        assert m["gallery_photos"][ident] == uri
    assert "manifest written" in logs[-1]

    gallery = shards.load_set(root, "gallery")
    assert sorted(gallery["identity"]) == ex["kept"] and sorted(gallery["label"]) == list(range(len(ex["kept"])))
    label_of = dict(zip(gallery["identity"], gallery["label"]))
    photo_of = dict(zip(gallery["identity"], gallery["unmasked"]))
    for split in shards.SPLITS:
        if not m["sets"][split]["rows"]:
            continue
        p = shards.load_set(root, split)
        assert p["masked"].shape[1:] == (SIZE, SIZE, 3) and set(p["variant"]) == {identities.VARIANT}
        assert p["landmarks"].shape == (len(p["label"]), 68, 2) and not np.isnan(p["landmarks"]).any()
        for ident, label, un, ma, al in zip(p["identity"], p["label"], p["unmasked"], p["masked"], p["alpha"]):
            assert label == label_of[ident] and shards.split_of(ident) == split
            assert not np.array_equal(un, photo_of[ident])  # another photo than the gallery's
            assert np.array_equal(ma[al == 0], un[al == 0]) and 0.05 < (al > 127).mean() < 0.45  # exact alpha


def test_no_probe_source_is_its_gallery_photo(prepared):
    ex, m, _ = prepared
    src = storage.resolve(f"s3://{BUCKET}/ids")
    for ident, gallery_uri in m["gallery_photos"].items():
        gallery_bytes = storage.read_bytes(storage.resolve(gallery_uri))
        others = [rel for rel, _ in storage.walk_files(src.join(ident))
                  if identities.PHOTO.search(rel) and src.join(ident, rel).uri != gallery_uri]
        assert others and all(storage.read_bytes(src.join(ident, rel)) != gallery_bytes for rel in others)


def test_drawn_alpha_covers_the_lower_face_of_the_real_photo(prepared):
    """On the astronaut's darker photo (a probe): alpha ~1 at the chin and mouth landmarks, ~0 at the eyes."""
    _, m, _ = prepared
    root = storage.resolve(f"s3://{BUCKET}/prepared")
    split = shards.split_of("astronaut")
    p = shards.load_set(root, split)
    dark = astronaut_versions()["d_dark.jpg"]
    im = Image.open(io.BytesIO(_encode(dark, "JPEG"))).convert("RGB")
    box, pts = landmark_mask.detect(im)
    square = landmark_mask.crop_box(box)
    want = landmark_mask.crop(im, square, SIZE)
    rows = [i for i, ident in enumerate(p["identity"]) if ident == "astronaut"]
    (row,) = [i for i in rows if np.abs(p["unmasked"][i].astype(int) - want).mean() < 1]  # the dark photo
    al = p["alpha"][row].astype(float) / 255
    # the shard records the landmarks the mask was drawn from, in crop pixels
    recorded = shards.landmarks_of({k: v[row] for k, v in p.items()})
    assert np.abs(recorded - landmark_mask.to_crop(pts, square, SIZE)).max() < 0.01
    xy = np.rint(landmark_mask.to_crop(pts, square, SIZE)).astype(int)
    at = [al[y, x] for x, y in xy]
    assert min(at[i] for i in [8, 30, 33, *range(48, 68)]) > 0.9  # chin, nose tip, mouth
    assert max(at[i] for i in range(36, 48)) < 0.1 and max(at[i] for i in range(17, 27)) < 0.1  # eyes, brows
    # everything between the nose's base and the chin, from one mouth corner to the other, is covered
    assert al[xy[33, 1] + 1:xy[8, 1] - 1, xy[48, 0]:xy[54, 0] + 1].mean() > 0.95
    assert al[:xy[27, 1]].max() < 0.1  # nothing above the top of the nose bridge


def test_rerun_resumes_and_flags_are_checked(prepared, capsys):
    _, m, _ = prepared
    logs: list[str] = []
    again = identities.run(f"s3://{BUCKET}/ids", f"s3://{BUCKET}/prepared", size=SIZE, shard_size=16,
                           max_bad_fraction=0.2, log=logs.append)
    assert again["sets"] == m["sets"] and again["skipped"] == m["skipped"]
    finals = [line for line in logs if re.search(r": (\d+)/\1 chunks done", line)]
    assert len(finals) == 2  # both stages, every chunk found finished
    assert all(re.search(r": (\d+)/\1 chunks done \(\1 already finished, skipped\)$", line) for line in finals)
    args = ["data", "prepare", "--identities", f"s3://{BUCKET}/ids", "--out", f"s3://{BUCKET}/x"]
    # (their ranges: tests/faults/test_outputs_flags.py)
    assert cli.main(args + ["--ffhq", "x", "--maskedfacenet", "y"]) == 2
    err = capsys.readouterr().err
    assert "--identities replaces --ffhq/--maskedfacenet" in err and len(err.strip().splitlines()) == 1
    assert cli.main(["data", "prepare", "--ffhq", "x", "--out", f"s3://{BUCKET}/x"]) == 2
    assert "needs --ffhq and --maskedfacenet, or --identities" in capsys.readouterr().err
    # the astronaut's folder is the only one with five photo files, and only four of them have a face
    with pytest.raises(identities.PrepareError, match="no identity under .* has 5 usable photos"):
        identities.run(f"s3://{BUCKET}/ids", f"s3://{BUCKET}/y", size=SIZE, min_photos_per_identity=5,
                       max_bad_fraction=0.5, log=lambda *_: None)


def test_landmark_mask_on_the_astronaut_and_on_synthetic_faces():
    im = Image.fromarray(skimage_data.astronaut())
    box, pts = landmark_mask.detect(im)
    assert 150 < (box[0] + box[2]) / 2 < 300 and 60 < (box[1] + box[3]) / 2 < 200  # her face, not the patch
    assert landmark_mask.detect(Image.new("RGB", (200, 200), (128, 128, 128))) is None
    rng = np.random.default_rng(0)
    for _ in range(3):  # the sidecar landmarks of a synthetic face fit the mask its renderer drew
        p, pose = synth.identity_params(rng), {}
        _, _, truth = synth.render(p, rng, 128, pose=pose)
        drawn = landmark_mask.raster(landmark_mask.polygon(synth.landmarks68(p, pose, 128)), 128) > 0.5
        assert (drawn & (truth > 127)).sum() / (drawn | (truth > 127)).sum() > 0.75
    fills = {landmark_mask.texture(landmark_mask.seed_of(f"p{i}"), 8)[1] for i in range(40)}
    assert len(fills) > 8  # several colours and textures, chosen per photo
    assert landmark_mask.texture(landmark_mask.seed_of("p1"), 8)[1] == landmark_mask.texture(
        landmark_mask.seed_of("p1"), 8)[1]


def test_synth_identity_layout_cli(tmp_path, capsys):
    out = tmp_path / "ids"
    assert cli.main(["data", "synth", "--layout", "identities", "--identities", "2", "--images-per-identity", "2",
                     "--out", str(out), "--size", "64"]) == 0
    assert "wrote 4 photos of 2 identities" in capsys.readouterr().out
    assert sorted(p.name for p in (out / "synth-000001").iterdir()) == ["00.json", "00.png", "01.json", "01.png"]
    side = json.loads((out / "synth-000000" / "01.json").read_text())
    assert len(side["landmarks"]) == 68 and len(side["box"]) == 4 and side["by"] == synth.SIDECAR_BY
    a, b = (np.asarray(Image.open(out / "synth-000000" / f"0{k}.png")) for k in (0, 1))
    assert a.shape == (64, 64, 3) and np.abs(a.astype(int) - b).mean() > 3  # photos of one person differ


def test_without_dlib_prepare_says_what_to_install_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "dlib", None)  # `import dlib` now raises ImportError
    assert landmark_mask.detector_problem() == "face detection needs dlib: pip install -e '.[dlib]'"
    for person in ("a", "b"):
        for k in range(2):
            (tmp_path / "ids" / person).mkdir(parents=True, exist_ok=True)
            (tmp_path / "ids" / person / f"{k}.png").write_bytes(_encode(np.zeros((40, 40, 3), np.uint8), "PNG"))
    with pytest.raises(identities.PrepareError, match=r"4 photos have no landmark sidecar and face detection "
                                                       r"needs dlib: pip install -e '\.\[dlib\]'$"):
        identities.run(str(tmp_path / "ids"), str(tmp_path / "out"), log=lambda *_: None)
    assert not (tmp_path / "out").exists()  # refused before any work


def test_train_and_evaluate_run_end_to_end_on_identity_data(prepared, tmp_path):
    """The path a user with LFW takes after prepare: projector, `maskgan train`, `maskgan evaluate`, all on the
    prepared identity folders in the bucket (a random trunk: there is no adapt pool in identity data)."""
    from maskgan.config import recipes
    from maskgan.reporting import runner
    from maskgan.run import preflight
    from maskgan.training import pretrain, train

    _, m, _ = prepared
    data, projector = f"s3://{BUCKET}/prepared", f"s3://{BUCKET}/projector.pt"
    said: list[str] = []
    fitted = pretrain.train_projector(data, projector, epochs=2, max_images=64, log=said.append)
    assert fitted["arch"] == "dilated"  # auto: masks drawn from landmarks in several colours
    assert fitted["iou"] < 0.9 and said[-1].startswith(f"WARNING: projector IoU {fitted['iou']:.3f} is below 0.9")
    cfg = recipes.debug_cpu(str(tmp_path)).replace(
        data={"uri": data, "batch_size": 4}, model={"projector": projector, "recognizer_weights": "random-compact"},
        train={"epochs": 1, "num_workers": 1, "cpus_per_worker": 1.0, "val_probes": 0,
               "storage": f"s3://{BUCKET}/runs", "name": "ident"})
    small = tmp_path / "small"  # images facenet cannot take are refused before Ray starts, in one line
    synth.generate(str(small), identities=2, images_per_identity=2, adapt_per_identity=1, size=64, log=lambda *_: None)
    with pytest.raises(shards.ShardError, match=r"images are 64 px; the facenet recogniser needs at least 75"):
        preflight.inputs(cfg.replace(data={"uri": str(small)}))
    result = train.fit(cfg)
    report = runner.evaluate_run(result.run_uri, log=lambda *_: None, universal_k=3, defender_steps=5)  # short
    assert report["self_match"] is False and report["gallery_size"] == m["identities"]
    scored = [s for s in shards.SPLITS if m["sets"][s]["rows"]]
    for row in ("unmasked", "original_mask", "generated"):
        assert set(report["accuracy"][row]) - {"ci95"} == set(scored)
    run = storage.resolve(result.run_uri)
    md = storage.read_text(run.join("report.md"))
    assert "Self-match" not in md and "Gallery and probes are different photos of each person" in md
