"""Print export: a design as a page at physical size (PDF) and the same pixels as a PNG at the print's dpi.

The page IS the mask panel: its size is width_mm x height_mm, the design fills it, a thin cut outline runs
along its edge and the model card's sha256 is printed small in a corner (what is printed names what was scored;
a run without an export names its checkpoint's state.pt sha256 instead, and the page says so).
`print_universal` prints universal design K of a checkpoint: the very design evaluation scored as
`universal/K` (wearing.universal_designs, with the report's `universal_k` and `universal_seed`).
`print_for_person` prints the design a conditional generator (cond_fc3, cond_conv) makes for the person in a
photo, from universal latent K: the face found by dlib HOG, cropped as the data was prepared
(data_loader.identities.face_crop), embedded by the run's trunk (its `for_person/K` row's design for them).
The design is upscaled from its resolution to width_mm / 25.4 x dpi pixels with a bicubic filter (a smooth
design stays smooth; nearest would print the design's pixel grid as blocks), and that image is embedded
unresampled (matplotlib writes an `interpolation="none"` image at its own pixel size), so `pdfimages -list`
reports exactly those pixels. Outputs are storage URIs (local or s3://), written whole.
"""

from __future__ import annotations

import json

import numpy as np
import torch

from data_loader import identities, landmark_mask, storage
from data_loader.prepare import BadImage
from maskgan.design import wearing
from maskgan.design.page import PrintError, PrintSpec, print_design
from maskgan.models.generators import CONDITIONAL
from maskgan.models.ops import to_float_images
from maskgan.run import build, checkpoints


def universal_settings(state: dict, checkpoint: storage.Location, log=print) -> tuple[int, int]:
    """(how many universal designs, their seed) as evaluation scored them for this checkpoint.

    evaluate_run's defaults (eval.universal_k, train.seed); when the run's report.json scored this very checkpoint, its
    `universal_k` and `universal_seed`. A report of another checkpoint is named in a warning (it did not score
    what is printed)."""

    cfg = checkpoints.config_of(state)
    count, seed = cfg.eval.universal_k, cfg.train.seed
    report_loc = storage.resolve(checkpoint.uri.rsplit("/", 1)[0], checkpoint.endpoint).join("report.json")
    if not storage.exists(report_loc):  # an export folder, or a run not evaluated yet
        return count, seed
    try:
        report = json.loads(storage.read_bytes(report_loc))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise PrintError(f"{report_loc.uri}: not JSON") from None
    if report.get("checkpoint") != checkpoint.uri:
        log(f"warning: {report_loc.uri} scored {report.get('checkpoint')}, not the printed {checkpoint.uri} "
            "(evaluate the run again to score what is printed)")
        return count, seed
    return int(report.get("universal_k", count)), int(report.get("universal_seed", seed))


def universal_design(state: dict, checkpoint: storage.Location, k: int, log=print) -> tuple[torch.Tensor, str]:
    """Universal design k [3,h,w] of a checkpoint, as evaluation built and scored it, and a line saying which."""

    count, seed = universal_settings(state, checkpoint, log)
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < count:
        raise PrintError(f"design {k!r}: evaluation scores {count} universal designs, numbered 0..{count - 1}")
    generator = checkpoints.generator_from_checkpoint(state, checkpoint.uri).eval()
    designs = wearing.universal_designs(generator, state["arch"]["latent_dim"], count, seed=seed)
    return designs[k], f"universal design {k} of {count} (seed {seed}), epoch {state['epoch'] + 1}"


def print_universal(state: dict, checkpoint: storage.Location, k: int, spec: PrintSpec, log=print) -> dict:
    """Universal design k of a checkpoint as the page `spec` describes and a PNG beside it; see print_pdf."""
    design, which = universal_design(state, checkpoint, k, log)
    return print_design(design, spec, note=which)


def person_photo(photo_uri: str, size: int) -> np.ndarray:
    """The face in the photo at `photo_uri`, cropped as prepared data is: uint8 [size,size,3]. One line naming
    the file when it is missing, unreadable or holds no face, or when dlib (the extra) is not installed."""

    loc = storage.resolve(photo_uri)
    if not storage.exists(loc):
        raise PrintError(f"{loc.uri}: photo not found")
    problem = landmark_mask.detector_problem()
    if problem:
        raise PrintError(f"{loc.uri}: {problem}")
    try:
        got = identities.face_crop(storage.read_bytes(loc), None, size)
    except BadImage as e:
        raise PrintError(f"{loc.uri}: not a usable photo ({e})") from None
    if got is None:
        raise PrintError(f"{loc.uri}: no face found (dlib HOG); give a frontal photo of the wearer")
    return got[0]


def person_design(state: dict, checkpoint: storage.Location, photo_uri: str, k: int,
                  log=print) -> tuple[torch.Tensor, str]:
    """The design [3,h,w] a conditional checkpoint makes for the person in the photo from universal latent k
    (what the report's for_person/k row had each probe wear), and a line saying which."""

    name = state["arch"]["generator"]
    if name not in CONDITIONAL:
        raise PrintError(f"--for: {checkpoint.uri} is a {name} generator, whose designs are the same for everyone; "
                         f"--for needs a conditional one (model.generator: {' or '.join(CONDITIONAL)})")
    count, seed = universal_settings(state, checkpoint, log)
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < count:
        raise PrintError(f"design {k!r}: evaluation scores {count} latents per person, numbered 0..{count - 1}")
    face = person_photo(photo_uri, int(state["arch"]["size"]))
    cfg = checkpoints.config_of(state)
    # the photo is cropped as identity folders are (person_photo), so the trunk takes that data's face box
    crop = build.face_crop(cfg.data.face_crop, cfg.model.recognizer_weights,
                              {"source": {"kind": "identities", "crop": landmark_mask.CROP}})
    trunk = build.load_recognizer(cfg.model.recognizer_weights, "cpu", cfg.data.endpoint_url, crop).trunk
    generator = checkpoints.generator_from_checkpoint(state, checkpoint.uri).eval()
    with torch.no_grad():
        cond = trunk(to_float_images(torch.from_numpy(face.copy()).unsqueeze(0)))
        z = wearing.universal_latents(state["arch"]["latent_dim"], count, seed)[k:k + 1]
        design = wearing.person_designs(generator, z, cond)[0]
    who = photo_uri.rsplit("/", 1)[-1]
    return design, f"design for {who} from latent {k} of {count} (seed {seed}), epoch {state['epoch'] + 1}"


def print_for_person(state: dict, checkpoint: storage.Location, photo_uri: str, k: int, spec: PrintSpec,
                     log=print) -> dict:
    """The design for the person in the photo (person_design) as the page `spec` describes and a PNG beside it."""
    design, which = person_design(state, checkpoint, photo_uri, k, log)
    return print_design(design, spec, note=which)
