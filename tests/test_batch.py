"""`hrinv batch`: items, seeds, sharding, atomic writes; torchrun (2 CPU processes, gloo) equals one process bit for
bit; a killed run resumes with only what is left; bad items end up in the table and the job goes on.

Tiny seeded generator + random VGG (tests/nodes_harness.py), 2 optimisation steps, 64 px pictures written here."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import shared_path
from hrinv.batch import (RESULTS, STATE_DIR, TMP_TAG, BatchItem, atomic_write, collect_items, item_seed,
                         read_results)
from hrinv.cli import main
from hrinv.distributed import DistContext, init_distributed, rank_device, shard
from hrinv.errors import DatasetLayoutError, InvalidSettingError
from proc_tools import child_env, run_group

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_cpu_thread")  # like each torchrun rank: equal float reductions
N_ITEMS = 8


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from safetensors.torch import save_file

    from hrinv.io.checkpoints import save_generator
    from nodes_harness import random_vgg, tiny_generators

    d = tmp_path_factory.mktemp("batch")
    G_s, _ = tiny_generators()
    save_generator(G_s, d / "g.safetensors")
    save_file({f"features.{k}": v.contiguous() for k, v in random_vgg().features.state_dict().items()},
              str(d / "vgg.safetensors"))
    rng = np.random.default_rng(0)
    (d / "imgs").mkdir()
    for i in range(N_ITEMS):
        size = (64, 64) if i % 3 else (80, 72)
        Image.fromarray((rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)).save(d / "imgs" / f"im{i}.png")
    return d


def _args(data, out, *extra):
    return ["batch", "invert", "--input", str(data / "imgs"), "--out", str(out), "-g", str(data / "g.safetensors"),
            "--vgg", str(data / "vgg.safetensors"), "--steps", "2", "--no-noise", "--downsample", "40",
            "--no-align", "--device", "cpu", "--seed", "5", *extra]


@pytest.fixture(scope="module")
def reference_run(data):
    """One process, one thread (torchrun gives each rank one thread, so the float reductions match)."""
    out = data / "single"
    assert main(_args(data, out, "--threads", "1", "-q")) == 0
    return out


def _files(out):
    return sorted(p.name for p in Path(out).iterdir() if p.is_file())


# ----------------------------------------------------------------------------------------------------------------
# Units


def test_items_from_folder_and_manifests(tmp_path):
    for name in ("b.png", "a.png", "c.jpg", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    items = collect_items(tmp_path, base_seed=3)
    assert [it.name for it in items] == ["a", "b", "c"] and [it.index for it in items] == [0, 1, 2]
    assert items[1].seed == item_seed(3, "b") != item_seed(4, "b")
    # A seed follows the item's name, not its position: a subset draws the same seeds.
    (tmp_path / "a.png").unlink()
    assert {it.name: it.seed for it in collect_items(tmp_path, base_seed=3)} == {"b": items[1].seed,
                                                                                 "c": items[2].seed}
    # Folder x references: content-major, names content__reference.
    items = collect_items(tmp_path, references=["s1.png", "s2.png"])
    assert [it.name for it in items] == ["b__s1", "b__s2", "c__s1", "c__s2"]

    (tmp_path / "sub").mkdir()
    csv = tmp_path / "sub" / "m.csv"
    csv.write_text("content,reference,steps,name,seed\nx.png,s.png,7,,\n/abs/y.png,,,yy,12\nx.png,s.png,,,\n")
    items = collect_items(csv, references=["r.png"], allowed_settings={"steps"})
    x = str(tmp_path / "sub" / "x.png")
    assert [it.input for it in items] == [x, "/abs/y.png", x]
    assert [it.reference for it in items] == [str(tmp_path / "sub" / "s.png"), "r.png", str(tmp_path / "sub" / "s.png")]
    assert [it.name for it in items] == ["x__s", "yy", "x__s_2"]  # duplicates get a suffix, deterministically
    assert items[0].settings == {"steps": 7} and items[1].settings == {} and items[1].seed == 12

    jl = tmp_path / "m.jsonl"
    jl.write_text('{"input": "p.png", "lr": 0.05}\n\n{"image": "q.png"}\n')
    items = collect_items(jl, allowed_settings={"lr"})
    assert [it.name for it in items] == ["p", "q"] and items[0].settings == {"lr": 0.05}

    with pytest.raises(InvalidSettingError, match="unknown column"):
        collect_items(jl, allowed_settings=set())
    bad = tmp_path / "bad.csv"
    bad.write_text("reference\ns.png\n")
    with pytest.raises(DatasetLayoutError, match="no content path"):
        collect_items(bad)
    bad.write_text("content,name\na.png,../evil\n")
    with pytest.raises(DatasetLayoutError, match="plain file stem"):
        collect_items(bad)
    with pytest.raises(DatasetLayoutError, match="needs a reference"):
        collect_items(jl, allowed_settings={"lr"}, needs_reference=True)
    with pytest.raises(DatasetLayoutError, match="does not exist"):
        collect_items(tmp_path / "nothing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetLayoutError, match="no images"):
        collect_items(empty)


@pytest.mark.parametrize("world", [1, 2, 3, 5, 8, 11])
def test_shards_have_no_overlap_and_no_gaps(world):
    items = list(range(17))
    parts = [shard(items, r, world) for r in range(world)]
    assert sorted(x for p in parts for x in p) == items
    assert all(p == items[r::world] for r, p in enumerate(parts))
    with pytest.raises(InvalidSettingError):
        shard(items, world, world)


def test_single_process_context_without_torchrun(monkeypatch):
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    ctx = init_distributed("cpu")
    assert (ctx.rank, ctx.world_size, ctx.active, ctx.device) == (0, 1, False, torch.device("cpu"))
    assert ctx.broadcast_object({"a": 1}) == {"a": 1} and ctx.all_reduce_max(2.0) == 2.0
    ctx.barrier()
    ctx.close()
    monkeypatch.setenv("WORLD_SIZE", "x")
    with pytest.raises(InvalidSettingError, match="WORLD_SIZE"):
        init_distributed("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(InvalidSettingError, match="no CUDA"):
            rank_device("cuda", 0, 2)
    assert DistContext().is_main


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "f.png"
    with pytest.raises(RuntimeError):
        with atomic_write(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    with atomic_write(target) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".png" and TMP_TAG in tmp.name
        tmp.write_bytes(b"whole")
    assert target.read_bytes() == b"whole" and _files(tmp_path) == ["f.png"]


# ----------------------------------------------------------------------------------------------------------------
# End to end


def test_single_run_writes_the_table_and_the_single_run_files(data, reference_run):
    rows = read_results(reference_run)
    assert [r["index"] for r in rows] == list(range(N_ITEMS))
    assert all(r["status"] == "ok" and r["error"] is None for r in rows)
    assert [r["input"] for r in rows] == [str(data / "imgs" / f"im{i}.png") for i in range(N_ITEMS)]
    for r in rows:
        assert r["outputs"] == {"image": f"{r['name']}.png", "latent": f"{r['name']}.latent.safetensors",
                                "record": f"{r['name']}.json"}
        assert r["seed"] == item_seed(5, r["name"]) and np.isfinite(r["metrics"]["psnr"])
        record = json.loads((reference_run / r["outputs"]["record"]).read_text())
        assert record["seed"] == r["seed"] and record["settings"]["inversion"]["steps"] == 2
        assert Image.open(reference_run / r["outputs"]["image"]).size == (64, 64)
    # Different items -> different results (the seeds and targets differ).
    assert len({(reference_run / r["outputs"]["image"]).read_bytes() for r in rows}) == N_ITEMS
    # Everything done -> a rerun processes nothing and leaves the files alone.
    stamp = {p: p.stat().st_mtime_ns for p in reference_run.iterdir() if p.is_file() and p.name != RESULTS}
    assert main(_args(data, reference_run, "--threads", "1", "-q")) == 0
    assert {p: p.stat().st_mtime_ns for p in stamp} == stamp
    assert read_results(reference_run) == rows


def _same_outputs(a, b):
    assert (a / RESULTS).read_bytes() == (b / RESULTS).read_bytes()
    assert _files(a) == _files(b)
    for name in _files(a):
        if name.endswith(".json"):
            ra, rb = json.loads((a / name).read_text()), json.loads((b / name).read_text())
            for r in (ra, rb):  # timings are the only thing allowed to differ
                r["metrics"].pop("seconds"), r["metrics"].pop("seconds_per_image")
            assert ra == rb, name
        else:
            assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_torchrun_two_cpu_processes_equal_one_process(data, reference_run, tmp_path):
    out = tmp_path / "two"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "hrinv", *_args(data, out)]
    r = run_group(cmd, child_env())
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "2 process(es)" in r.stderr and f"{N_ITEMS} ok, 0 error(s)" in r.stderr
    rows = read_results(out)
    assert [x["index"] for x in rows] == list(range(N_ITEMS))  # every item once, in item order
    assert not list((out / STATE_DIR).glob("part-*"))  # partial tables merged and removed
    assert len(list((out / STATE_DIR / "done").iterdir())) == N_ITEMS
    _same_outputs(reference_run, out)


def test_killed_run_resumes_with_only_what_is_left(data, reference_run, tmp_path, capsys):
    out = tmp_path / "resume"
    crash = run_group([sys.executable, str(REPO / "tests" / "batch_killed_midway.py"), "3", *_args(data, out, "-q")],
                 child_env())
    assert crash.returncode == 75, crash.stderr[-3000:]
    done = sorted(p.stem for p in (out / STATE_DIR / "done").iterdir())
    assert done == ["im0", "im1", "im2"] and not (out / RESULTS).exists()
    # The interrupted item: its image is in place, its latent only as a temporary file, no done marker.
    assert (out / "im3.png").is_file() and not (out / "im3.latent.safetensors").exists()
    tmps = [p.name for p in out.iterdir() if TMP_TAG in p.name]
    assert len(tmps) == 1 and tmps[0].startswith(".im3.latent") and tmps[0].endswith(".safetensors"), tmps
    # A finished item whose output was damaged afterwards is not done either.
    (out / "im2.latent.safetensors").unlink()
    finished = {n: (out / n).read_bytes() for n in ("im0.png", "im0.latent.safetensors", "im1.json")}
    stamps = {n: (out / n).stat().st_mtime_ns for n in finished}

    capsys.readouterr()
    assert main(_args(data, out, "--threads", "1")) == 0
    err = capsys.readouterr().err
    assert f"{N_ITEMS} ok, 0 error(s) of {N_ITEMS} item(s) (2 already done before this run)" in err
    assert {n: (out / n).read_bytes() for n in finished} == finished  # untouched
    assert {n: (out / n).stat().st_mtime_ns for n in finished} == stamps
    assert not [p for p in out.rglob("*") if TMP_TAG in p.name]  # stale temporary files removed
    _same_outputs(reference_run, out)


def test_bad_items_are_recorded_and_the_job_goes_on(data, tmp_path):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    good = Image.open(data / "imgs" / "im1.png")
    good.save(imgs / "a_good.png")
    (imgs / "b_corrupt.png").write_bytes(b"this is not a png")
    good.save(imgs / "c_truncated.png")
    (imgs / "c_truncated.png").write_bytes((imgs / "c_truncated.png").read_bytes()[:200])
    manifest = tmp_path / "m.csv"
    manifest.write_text("content,steps\nimgs/a_good.png,\nimgs/b_corrupt.png,\nimgs/c_truncated.png,\n"
                        "imgs/missing.png,\nimgs/a_good.png,0\n")
    out = tmp_path / "out"
    args = _args(data, out, "-q")
    args[args.index("--input") + 1] = str(manifest)
    assert main(args) == 0
    rows = read_results(out)
    assert [r["status"] for r in rows] == ["ok", "error", "error", "error", "error"]
    assert [r["error_type"] for r in rows[1:]] == ["ImageReadError"] * 3 + ["InvalidSettingError"]
    assert "not an image" in rows[1]["error"] and "truncated" in rows[2]["error"]
    assert "missing.png" in rows[3]["error"] and "steps" in rows[4]["error"]
    assert all(r["outputs"] == {} for r in rows[1:]) and rows[4]["settings"] == {"steps": 0}
    assert _files(out) == ["a_good.json", "a_good.latent.safetensors", "a_good.png", RESULTS]
    # Bad items are retried by the next run (a fixed file then completes); good ones are not redone.
    good.save(imgs / "b_corrupt.png")
    assert main(args) == 0
    assert [r["status"] for r in read_results(out)] == ["ok", "ok", "error", "error", "error"]


def test_changed_settings_are_refused_unless_overwrite(data, reference_run, tmp_path, capsys):
    out = tmp_path / "o"
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"content": str(data / "imgs" / "im1.png")}) + "\n")
    args = _args(data, out, "-q")
    args[args.index("--input") + 1] = str(manifest)
    assert main(args) == 0
    args[args.index("--steps") + 1] = "3"
    assert main(args) == 1
    assert "other settings" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0
    assert json.loads((out / "im1.json").read_text())["settings"]["inversion"]["steps"] == 3


def test_batch_item_row_names():
    row = BatchItem(index=4, name="n", input="x.png", seed=9).row()
    assert list(row) == ["index", "name", "input", "seed", "settings"]


def test_photos_without_a_face_are_bad_items(data, tmp_path):
    """With alignment (the default of `hrinv invert`), a photo without a face and a corrupt file are recorded; a real
    photo (from ../shared when present) gets every face inverted with the single-run file names."""
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    Image.new("RGB", (120, 90), (128, 128, 128)).save(imgs / "b_grey.png")
    (imgs / "c_corrupt.jpg").write_bytes(b"\xff\xd8 truncated")
    out = tmp_path / "out"
    args = _args(data, out, "-q", "--min-face", "20")
    args.remove("--no-align")
    args[args.index("--input") + 1] = str(imgs)
    try:
        couple = shared_path("data", "faces", "id-photos", "couple.jpg")
        Image.open(couple).save(imgs / "a_couple.png")
    except pytest.skip.Exception:
        couple = None
    assert main(args) == 0
    rows = {r["name"]: r for r in read_results(out)}
    assert rows["b_grey"]["status"] == "error" and rows["b_grey"]["error_type"] == "NoFaceFoundError"
    assert rows["c_corrupt"]["status"] == "error" and rows["c_corrupt"]["error_type"] == "ImageReadError"
    if couple is not None:
        r = rows["a_couple"]
        assert r["status"] == "ok" and r["metrics"]["faces"] == 2, r
        assert {"alignment", "face0", "face0_aligned", "face0_latent", "face0_record", "face1"} <= set(r["outputs"])
        assert r["outputs"]["face1"] == "a_couple_1.png" and (out / "a_couple.alignment.json").is_file()
        assert Image.open(out / "a_couple_0.png").size == (64, 64)


def test_stylize_job_on_tiny_generators(data, tmp_path):
    """`hrinv batch stylize` over a folder x 2 references (pre-aligned contents): one item per pair, its own files,
    seeds per item; 2 torchrun-free processes are covered by the invert tests (same engine)."""
    from hrinv.io.checkpoints import save_generator
    from nodes_harness import tiny_generators

    _, G_t = tiny_generators()
    save_generator(G_t, tmp_path / "gt.safetensors")
    refs = []
    for j in range(2):
        refs.append(str(tmp_path / f"style{j}.png"))
        Image.open(data / "imgs" / f"im{j + 4}.png").save(refs[-1])
    contents = tmp_path / "contents"
    contents.mkdir()
    Image.open(data / "imgs" / "im1.png").save(contents / "c0.png")
    (contents / "c2_corrupt.png").write_bytes(b"nope")
    out = tmp_path / "out"
    args = ["batch", "stylize", "--input", str(contents), "--reference", *refs, "--out", str(out), "--source",
            str(data / "g.safetensors"), "--target", str(tmp_path / "gt.safetensors"), "--vgg",
            str(data / "vgg.safetensors"), "--steps", "2", "--lso-steps", "1", "--lam", "0.2,0.2,0.2,0.7,0.7",
            "--no-align", "--device", "cpu", "-q"]
    assert main(args) == 0
    rows = read_results(out)
    assert [r["name"] for r in rows] == ["c0__style0", "c0__style1", "c2_corrupt__style0", "c2_corrupt__style1"]
    assert [r["status"] for r in rows] == ["ok"] * 2 + ["error"] * 2
    assert rows[0]["reference"] == refs[0] and rows[1]["reference"] == refs[1]
    assert rows[0]["outputs"] == {"reference_inversion": "c0__style0_reference_inv.png", "image": "c0__style0.png",
                                  "mixed": "c0__style0_mixed.png", "content_inversion": "c0__style0_inv.png",
                                  "latent": "c0__style0.latent.safetensors", "record": "c0__style0.json"}
    rec = json.loads((out / "c0__style0.json").read_text())
    assert rec["seed"] == rows[0]["seed"] and rec["metrics"]["lso_d_h_after"] is not None
    assert rows[0]["metrics"]["lso_d_h_after"] == rec["metrics"]["lso_d_h_after"]
    assert (out / rows[0]["outputs"]["image"]).read_bytes() != (out / rows[1]["outputs"]["image"]).read_bytes()
    # Resume: nothing left but the two bad items, which fail again; the good files are untouched.
    stamp = (out / "c0__style1.png").stat().st_mtime_ns
    assert main(args) == 0
    assert (out / "c0__style1.png").stat().st_mtime_ns == stamp
    assert [r["status"] for r in read_results(out)] == ["ok"] * 2 + ["error"] * 2


def test_finetune_then_stylize(data, tmp_path):
    """--finetune-style instead of --target: G_t is fine-tuned once (rank 0), saved in the job folder and reused by a
    resumed run; the items are stylised with it."""
    from hrinv.io.checkpoints import load_generator

    style = tmp_path / "style.png"
    Image.open(data / "imgs" / "im6.png").save(style)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"content": str(data / "imgs" / "im1.png"), "reference": str(style)}) + "\n")
    out = tmp_path / "out"
    args = ["batch", "stylize", "--input", str(manifest), "--out", str(out), "--source", str(data / "g.safetensors"),
            "--finetune-style", str(style), "--finetune-steps", "2", "--finetune-invert-steps", "1",
            "--vgg", str(data / "vgg.safetensors"), "--steps", "1", "--lso-steps", "0", "--no-align",
            "--device", "cpu", "-q"]
    assert main(args) == 0
    G_t = load_generator(out / "generator_t.safetensors")
    assert G_t.meta["parent_fingerprint"] == load_generator(data / "g.safetensors").fingerprint()
    rows = read_results(out)
    assert [r["status"] for r in rows] == ["ok"] and rows[0]["name"] == "im1"
    job = json.loads((out / STATE_DIR / "job.json").read_text())
    assert job["target"] == str(out / "generator_t.safetensors") and job["finetune"]["config"]["steps"] == 2
    stamp = (out / "generator_t.safetensors").stat().st_mtime_ns
    assert main(args) == 0  # resumed: nothing to do, G_t not fitted again
    assert (out / "generator_t.safetensors").stat().st_mtime_ns == stamp
    assert main(args[:args.index("--finetune-style")] + ["--target", str(data / "g.safetensors")]
                + args[args.index("--vgg"):] + ["--finetune-style", str(style)]) == 2  # both: refused


def _stylize_inputs(data, tmp_path):
    """A stylize job's inputs: the test-data G_s and VGG, a tiny G_t and a style image file."""
    from hrinv.io.checkpoints import load_generator
    from hrinv.losses import load_vgg16
    from nodes_harness import tiny_generators

    style = tmp_path / "style.png"
    Image.open(data / "imgs" / "im5.png").save(style)
    return load_generator(data / "g.safetensors"), tiny_generators()[1], load_vgg16(data / "vgg.safetensors"), style


def test_stylize_job_inverts_each_reference_once(data, tmp_path, monkeypatch):
    """3 contents x 1 reference: the reference is inverted once (with the job's seed) and reused; an item whose seed
    is the job's seed gives exactly what one `hrinv.stylize` call (which inverts the reference itself) gives."""
    import hrinv.inversion
    from hrinv.batch import StylizeJob, run_batch
    from hrinv.latent import Latent
    from hrinv.pipeline import StylizeConfig, stylize

    G_s, G_t, vgg, style = _stylize_inputs(data, tmp_path)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps({"content": str(data / "imgs" / f"im{i}.png"), "reference": str(style),
                                            "seed": 5}) + "\n" for i in (1, 2, 4)))
    cfg = StylizeConfig(steps=2, lso_steps=1, lam=[0.2, 0.2, 0.2, 0.7, 0.7], seed=5)
    job = StylizeJob(G_s, G_t, vgg, cfg, align=False)
    real, calls = hrinv.inversion.invert, []
    monkeypatch.setattr(hrinv.inversion, "invert", lambda G, t, *a, **k: calls.append(G) or real(G, t, *a, **k))
    summary = run_batch(job, collect_items(manifest, base_seed=5, needs_reference=True), tmp_path / "out")
    assert summary.ok == 3 and job.reference_inversions == 1
    assert [G is G_t for G in calls] == [True, False, False, False]  # the reference once, then the 3 contents
    monkeypatch.setattr(hrinv.inversion, "invert", real)

    from hrinv.commands._common import load_image

    direct = stylize(load_image(data / "imgs" / "im2.png", 64), load_image(style, 64), G_s, G_t, vgg, config=cfg,
                     align=False, paste=False)
    lat = Latent.load(tmp_path / "out" / "im2.latent.safetensors")
    assert torch.equal(lat.ws, direct.latents[0].ws[0:1])
    rec = json.loads((tmp_path / "out" / "im2.json").read_text())
    assert rec["metrics"]["reference_psnr"] == direct.metrics["reference_psnr"][0]
    assert rec["metrics"]["lso_d_h_after"] == direct.metrics["lso"][0]["d_h_after"][0]


def test_batch_size_inverts_several_items_together(data, reference_run, tmp_path, monkeypatch):
    """--batch-size 4: the items go through `invert` four at a time, each with its own seed; a bad item in a batch is
    recorded and the others complete; an item with its own settings gets its own optimisation; every item's files
    equal the one-item-at-a-time run to float rounding (docs/batch.md: independent problems, batch-size dependent
    kernels), with the same settings and seeds in its files."""
    import hrinv.inversion
    from hrinv.latent import Latent

    real, sizes = hrinv.inversion.invert, []
    monkeypatch.setattr(hrinv.inversion, "invert",
                        lambda G, t, *a, **k: sizes.append((t.shape[0], k.get("seeds"))) or real(G, t, *a, **k))
    manifest = tmp_path / "m.jsonl"
    rows = [{"content": str(data / "imgs" / f"im{i}.png")} for i in range(N_ITEMS)]
    rows.insert(2, {"content": str(tmp_path / "missing.png")})
    rows.append({"content": str(data / "imgs" / "im1.png"), "name": "im1_one_step", "steps": 1})
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "b4"
    args = _args(data, out, "--threads", "1", "-q", "--batch-size", "4")
    args[args.index("--input") + 1] = str(manifest)
    assert main(args) == 0
    table = read_results(out)
    assert [r["status"] for r in table] == ["ok", "ok", "error"] + ["ok"] * (N_ITEMS - 1)
    # chunks of 4 items: [im0, im1, missing, im2] -> 3 images; [im3..im6]; [im7, im1_one_step] -> 1 + 1 (own steps)
    assert [n for n, _ in sizes] == [3, 4, 1, 1], sizes
    assert sizes[0][1] == [item_seed(5, n) for n in ("im0", "im1", "im2")]
    single = {r["name"]: r for r in read_results(reference_run)}
    for r in table:
        if r["status"] != "ok" or r["name"] not in single:
            continue
        a = json.loads((reference_run / f"{r['name']}.json").read_text())
        b = json.loads((out / f"{r['name']}.json").read_text())
        assert b["settings"] == a["settings"] and b["seed"] == a["seed"] == r["seed"]
        assert abs(b["metrics"]["psnr"] - a["metrics"]["psnr"]) < 1e-3  # dB
        la, lb = Latent.load(reference_run / f"{r['name']}.latent.safetensors"), Latent.load(out / r["outputs"]["latent"])
        assert float((la.ws - lb.ws).abs().max()) < 1e-3  # 2 Adam steps of lr 0.1: rounding, not another code
        ia = np.asarray(Image.open(reference_run / f"{r['name']}.png"), dtype=np.int16)
        ib = np.asarray(Image.open(out / r["outputs"]["image"]), dtype=np.int16)
        assert np.abs(ia - ib).max() <= 1  # 8-bit PNGs: at most one level apart
    assert json.loads((out / "im1_one_step.json").read_text())["settings"]["inversion"]["steps"] == 1
    assert json.loads((out / "im3.json").read_text())["inverted_with_items"] == 4


def test_stylize_job_reference_inversion_uses_the_jobs_calibration(data, tmp_path, monkeypatch):
    """`hrinv batch stylize --calibration X` (StylizeConfig.calibration) reaches the reference's inversion too, not only
    the content's: every perceptual loss the job builds is built with the job's calibration."""
    import hrinv.losses
    from hrinv.batch import StylizeJob, run_batch
    from hrinv.pipeline import StylizeConfig

    G_s, G_t, vgg, style = _stylize_inputs(data, tmp_path)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"content": str(data / "imgs" / "im1.png"), "reference": str(style)}) + "\n")
    seen, Real = [], hrinv.losses.PerceptualLoss

    class Recording(Real):
        def __init__(self, *a, **k):
            seen.append(k.get("calibration", "auto"))
            super().__init__(*a, **k)

    monkeypatch.setattr(hrinv.losses, "PerceptualLoss", Recording)
    job = StylizeJob(G_s, G_t, vgg, StylizeConfig(steps=1, lso_steps=0, calibration="none", seed=5), align=False)
    summary = run_batch(job, collect_items(manifest, base_seed=5, needs_reference=True), tmp_path / "out")
    assert summary.ok == 1 and job.reference_inversions == 1
    assert seen and set(seen) == {"none"}, seen  # the reference's loss was built with "auto" before the fix
