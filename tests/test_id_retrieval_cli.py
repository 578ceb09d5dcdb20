"""`hrinv id-retrieval` on the authors' layout: the demo folder, and the errors users hit."""

import json
import shutil

import pytest
from conftest import shared_path
from PIL import Image

from hrinv.cli import main


@pytest.fixture(scope="module")
def dat():
    return shared_path("weights", "dlib_face_recognition_resnet_model_v1.dat")


@pytest.fixture(scope="module")
def random_irse50(tmp_path_factory):
    """An IR-SE50 weights file with random values: the folder errors below do not depend on learned weights."""
    import torch

    from hrinv.faceid.irse50 import IRSE50

    path = tmp_path_factory.mktemp("irse50") / "model_ir_se50.pth"
    torch.save(IRSE50().state_dict(), path)
    return path


def test_runs_on_the_authors_demo(dat, tmp_path, capsys):
    demo = shared_path("data", "styles", "id_retrieval_demo")
    out = tmp_path / "r.json"
    assert main(["id-retrieval", str(demo), "--network", str(dat), "--out", str(out), "--per-image"]) == 0
    text = capsys.readouterr().out
    assert "ID retrieval (top-1)" in text and "chance level" in text and "00003/1.jpg" in text
    d = json.loads(out.read_text())
    assert d["num_content"] == 4 and d["num_stylized"] == 16 and d["chance"] == 0.25
    assert len(d["per_image"]) == 16 and d["embedder"]["name"] == "dlib"
    assert d["top1"] == sum(r["hit"] for r in d["per_image"]) / 16
    assert d["top1"] > d["chance"]  # the stylised faces keep some identity


def _layout(tmp_path, n=2, size=96):
    for i in range(n):
        (tmp_path / "content").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (size, size), (40 * i, 80, 120)).save(tmp_path / "content" / f"{i:05d}.png")
        (tmp_path / "transfer" / f"{i:05d}").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (size, size), (40 * i, 90, 120)).save(tmp_path / "transfer" / f"{i:05d}" / "1.png")
    return tmp_path


@pytest.mark.parametrize("case, message", [
    ("empty_content", "has no images"),
    ("no_transfer_dir", "does not exist"),
    ("unmatched", "match no content"),
    ("unreadable", "broken.jpg"),
    ("too_small", "needs at least"),
    ("no_stylised", "no stylised images"),
])
def test_user_errors(random_irse50, tmp_path, capsys, case, message):
    root = _layout(tmp_path)
    if case == "empty_content":
        for p in (root / "content").iterdir():
            p.unlink()
    elif case == "no_transfer_dir":
        shutil.rmtree(root / "transfer")
    elif case == "unmatched":
        (root / "transfer" / "someone_else").mkdir()
    elif case == "unreadable":
        (root / "transfer" / "00001" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    elif case == "too_small":
        Image.new("RGB", (20, 20)).save(root / "transfer" / "00001" / "tiny.png")
    elif case == "no_stylised":
        for d in (root / "transfer").iterdir():
            shutil.rmtree(d)
    rc = main(["id-retrieval", str(root), "--network", str(random_irse50), "--out", "-"])
    err = capsys.readouterr().err
    assert rc == 1 and message in err, err
