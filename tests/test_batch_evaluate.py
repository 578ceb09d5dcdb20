"""`hrinv evaluate`: PSNR, perceptual distance and ID retrieval over a batch results table (tiny face network and
random VGG from tests/nodes_harness.py; pictures written here)."""

import json
import math

import numpy as np
import pytest
from PIL import Image

from hrinv.batch import RESULTS
from hrinv.cli import main
from hrinv.errors import DatasetLayoutError
from hrinv.metrics.evaluate import evaluate_results, markdown_table
from nodes_harness import face_images, random_vgg, tiny_face_embedder


pytestmark = pytest.mark.usefixtures("one_cpu_thread")  # tiny convolutions: faster without thread overhead


@pytest.fixture(scope="module")
def vgg():
    return random_vgg()


def _u8(t):  # [H, W, 3] in [0, 1] -> uint8 array
    return (t.numpy() * 255 + 0.5).clip(0, 255).astype(np.uint8)


@pytest.fixture
def job(tmp_path):
    """A job folder whose outputs are the inputs plus known noise; the last row failed in the job."""
    imgs = face_images(5, size=64)  # [5, 64, 64, 3]
    g = np.random.default_rng(0)
    rows, expected = [], []
    for i in range(5):
        inp = _u8(imgs[i])
        Image.fromarray(inp).save(tmp_path / f"in{i}.png")
        noisy = np.clip(inp.astype(np.int16) + g.integers(-6, 7, inp.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(tmp_path / f"out{i}.png")
        mse = float((((noisy.astype(np.float64) - inp) / 255.0) ** 2).mean())
        expected.append(10 * math.log10(1 / mse))
        rows.append({"index": i, "name": f"in{i}", "input": str(tmp_path / f"in{i}.png"), "status": "ok",
                     "error": None, "outputs": {"image": f"out{i}.png"}})
    rows.append({"index": 5, "name": "bad", "input": str(tmp_path / "bad.png"), "status": "error",
                 "error": "not an image", "outputs": {}})
    (tmp_path / RESULTS).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path, expected


def test_metrics_over_the_table(job, vgg):
    root, expected = job
    rep = evaluate_results(root / RESULTS, vgg=vgg, embedder=tiny_face_embedder())
    assert rep["ok"] == 5 and rep["errors"] == 1 and rep["items"] == 6
    assert [p["psnr"] for p in rep["per_item"]] == pytest.approx(expected, abs=1e-6)
    assert rep["summary"]["psnr"]["mean"] == pytest.approx(np.mean(expected))
    assert all(0 < p["perceptual"] < 0.1 for p in rep["per_item"])
    idr = rep["summary"]["id_retrieval"]
    assert idr["top1"] == 1.0 and idr["num_content"] == 5 and idr["num_stylized"] == 5  # noise keeps identity
    md = markdown_table(rep)
    assert "| PSNR (dB) ↑ |" in md and "| top-1 ↑ | 100.00 % |" in md


def test_perceptual_distance_and_id_retrieval_see_a_wrong_output(job, vgg):
    root, _ = job
    # Swap two outputs: their PSNR drops, their perceptual distance grows and ID retrieval misses them.
    rows = [json.loads(x) for x in (root / RESULTS).read_text().splitlines()]
    rows[0]["outputs"]["image"], rows[1]["outputs"]["image"] = "out1.png", "out0.png"
    (root / RESULTS).write_text("".join(json.dumps(r) + "\n" for r in rows))
    rep = evaluate_results(root, vgg=vgg, embedder=tiny_face_embedder())
    per = rep["per_item"]
    assert max(p["psnr"] for p in per[:2]) < min(p["psnr"] for p in per[2:])
    assert min(p["perceptual"] for p in per[:2]) > max(p["perceptual"] for p in per[2:])
    assert [p["id_hit"] for p in per] == [False, False, True, True, True]
    assert rep["summary"]["id_retrieval"]["top1"] == pytest.approx(0.6)


def test_cli_writes_json_and_markdown(job, vgg, tmp_path, capsys):
    root, expected = job
    from safetensors.torch import save_file

    path = tmp_path / "vgg.safetensors"
    save_file({f"features.{k}": v.contiguous() for k, v in vgg.features.state_dict().items()}, str(path))
    assert main(["evaluate", str(root / RESULTS), "--vgg", str(path), "--device", "cpu", "-q"]) == 0
    rep = json.loads((root / "evaluation.json").read_text())
    assert rep["summary"]["psnr"]["count"] == 5 and rep["summary"]["id_retrieval"] is None
    assert rep["summary"]["perceptual"]["count"] == 5
    assert "no face network given" in (root / "evaluation.md").read_text()
    assert "PSNR" in capsys.readouterr().out


def test_nothing_to_evaluate(tmp_path):
    (tmp_path / RESULTS).write_text(json.dumps({"index": 0, "input": "a.png", "status": "error"}) + "\n")
    with pytest.raises(DatasetLayoutError, match="no successful item"):
        evaluate_results(tmp_path / RESULTS)
    with pytest.raises(DatasetLayoutError, match="not found"):
        evaluate_results(tmp_path / "nope.jsonl")


def test_evaluate_under_torchrun_equals_one_process(job, vgg, tmp_path):
    """2 gloo ranks, each its share of the faces (3 + 2), rank 0 gathers: the same per-item PSNR (exact), perceptual
    distance and ID retrieval as one process (embeddings in other batch sizes: equal to float rounding)."""
    import sys

    from proc_tools import REPO, child_env, run_group

    root, _ = job
    out = tmp_path / "report.json"
    r = run_group([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                   str(REPO / "tests" / "evaluate_ranks.py"), str(root / RESULTS), str(out)], child_env())
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    two = json.loads(out.read_text())
    one = evaluate_results(root / RESULTS, vgg=vgg, embedder=tiny_face_embedder())
    assert [p["index"] for p in two["per_item"]] == [p["index"] for p in one["per_item"]] == [0, 1, 2, 3, 4]
    assert [p["psnr"] for p in two["per_item"]] == [p["psnr"] for p in one["per_item"]]
    assert [p["perceptual"] for p in two["per_item"]] == pytest.approx([p["perceptual"] for p in one["per_item"]],
                                                                      rel=1e-5)
    assert [p["id_hit"] for p in two["per_item"]] == [p["id_hit"] for p in one["per_item"]]
    assert [p["id_true_distance"] for p in two["per_item"]] == pytest.approx(
        [p["id_true_distance"] for p in one["per_item"]], rel=1e-4, abs=1e-6)
    a, b = two["summary"]["id_retrieval"], one["summary"]["id_retrieval"]
    assert a["top1"] == b["top1"] and a["num_content"] == b["num_content"] == 5
