"""One design-file reader for evaluate, print and check: a PNG with transparency is the picture it prints as
(composited onto white paper), a fully transparent one is refused in one line by every command, before any
model is loaded or any file written."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from cli.main import main
from maskgan.design import design_file, wearing


def png(array: np.ndarray, mode: str | None = None, **info) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode).save(buf, "PNG", **info)
    return buf.getvalue()


def test_transparency_prints_as_white_paper():
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[..., :3] = (200, 40, 10)
    rgba[0, :, 3] = 255  # opaque row
    rgba[1, 0, 3] = 0  # clear: paper
    rgba[1, 1, 3] = 128  # half: halfway to white
    rgba[1, 2, 3] = 255
    got = design_file.decode(png(rgba))
    assert got[0].tolist() == [[200, 40, 10]] * 3
    assert got[1, 0].tolist() == [255, 255, 255]
    assert got[1, 1].tolist() == [round(200 * 128 / 255 + 255 * 127 / 255), round(40 * 128 / 255 + 255 * 127 / 255),
                                  round(10 * 128 / 255 + 255 * 127 / 255)]
    assert got[1, 2].tolist() == [200, 40, 10]
    # grey + alpha, and an opaque RGB file, read as they print
    la = np.stack([np.full((2, 2), 50, np.uint8), np.array([[0, 255], [255, 255]], np.uint8)], -1)
    assert design_file.decode(png(la, "LA"))[0, 0].tolist() == [255, 255, 255]
    rgb = np.random.default_rng(0).integers(0, 256, (4, 8, 3), dtype=np.uint8)
    assert np.array_equal(design_file.decode(png(rgb)), rgb)
    # the reader evaluation has always used is this one
    assert np.array_equal((wearing.design_from_png(png(rgba))[0].permute(1, 2, 0).numpy() * 255).round(), got)


def test_a_fully_transparent_design_is_refused_not_scored_as_black(tmp_path):
    clear = tmp_path / "clear.png"
    clear.write_bytes(png(np.zeros((64, 128, 4), np.uint8)))
    with pytest.raises(design_file.DesignFileError, match=r"clear\.png: every pixel is fully transparent; it would "
                                                          r"print as blank paper"):
        design_file.read(str(clear))
    (tmp_path / "junk.png").write_bytes(b"not a png")
    with pytest.raises(design_file.DesignFileError, match=r"junk\.png: not a readable image"):
        design_file.read(str(tmp_path / "junk.png"))
    with pytest.raises(design_file.DesignFileError, match=r"nope\.png: design file not found"):
        design_file.read(str(tmp_path / "nope.png"))


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("maskgan: error: "), err
    return lines[0]


@pytest.mark.parametrize("command", [
    ["evaluate", "--run", "{tmp}/no-run", "--design-file", "{tmp}/clear.png"],
    ["print", "--design-file", "{tmp}/clear.png", "--out", "{tmp}/mask.pdf"],
    ["check", "{tmp}/me", "--try-on", "--design-file", "{tmp}/clear.png"],
], ids=["evaluate", "print", "check"])
def test_every_command_refuses_a_blank_design_file_in_one_line(tmp_path, capsys, command):
    (tmp_path / "clear.png").write_bytes(png(np.zeros((64, 128, 4), np.uint8)))
    code = main([a.format(tmp=tmp_path) for a in command])
    err = capsys.readouterr().err
    assert code == 2 and "clear.png: every pixel is fully transparent" in one_line(err)
    assert not (tmp_path / "mask.pdf").exists() and not (tmp_path / "mask.png").exists()


def test_print_design_file_prints_transparency_as_paper(tmp_path, capsys):
    rgba = np.zeros((64, 128, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:, :64, 3] = 255  # left half opaque red, right half clear
    (tmp_path / "half.png").write_bytes(png(rgba))
    code = main(["print", "--design-file", str(tmp_path / "half.png"), "--dpi", "72", "--out", str(tmp_path / "m.pdf")])
    out = capsys.readouterr().out
    assert code == 0 and "design file sha256" in out and (tmp_path / "m.pdf").exists()
    page = np.asarray(Image.open(tmp_path / "m.png").convert("RGB"))
    h, w, _ = page.shape
    assert page[h // 2, w // 4].tolist() == [255, 0, 0] and page[h // 2, 3 * w // 4].tolist() == [255, 255, 255]
    code = main(["print", "--out", str(tmp_path / "x.pdf")])
    assert code == 2 and "print needs --run URI with --design N, or --design-file PNG" in one_line(capsys.readouterr().err)
