"""The pack inside a real ComfyUI (``pytest -m comfyui``; skipped unless ``COMFYUI_ROOT`` is set).

Starts ``main.py --cpu`` from ``COMFYUI_ROOT`` in a subprocess (``COMFYUI_PYTHON``, default: the interpreter running
pytest) on a free local port with ``--base-directory`` set to a temporary folder whose ``custom_nodes/`` holds only
a link to this repository, so the checkout is tested alone even when the pack is also installed in the ComfyUI
folder's own ``custom_nodes/`` (the pack's log line says which copy loaded, and the test checks it). An
``extra_model_paths.yaml`` adds that folder's ``models/`` sub-folders for our model keys. Nothing is copied into
ComfyUI. The models are small ones made here: two 64 px
generators (source and a "fine-tuned" target) saved with ``save_generator``, the team's VGG16 caffe weights from
../shared when present (else random VGG16 weights), and dlib's face network from ../shared when present (else random
IR-SE50 weights). Input pictures are made by our code too.

Then: every node is registered and its /object_info agrees with what the CI stubs produce; the workflows show up as
templates (and the API copies do not); an unedited template whose models are missing is refused by /prompt; every API
workflow runs to success with the checkpoint names substituted and small step counts; an unchanged re-run is served
from the cache; one run is cancelled mid-way; prompts fail validation with our messages (missing model, a setting the
tooltip forbids, generators or batches that do not fit, caught before any inversion runs); one fails at run time with
our message. With node + Chromium + playwright-core, every template is opened in the real editor: it exports to the
API copy, no node overlaps another, and a screenshot of each is written (``HRINV_SCREENSHOTS`` or the test's
temporary folder).

Run it as:  COMFYUI_ROOT=/path/to/ComfyUI /path/to/comfy-venv/bin/python -m pytest -m comfyui tests/test_comfyui_host.py
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest
import torch
from nodes_harness import (REPO, SHARED_WEIGHTS, TINY_KWARGS, face_images, object_info, random_vgg, stubbed_pack,
                           tiny_generators)

from tools import hrinv_workflows as wf

pytestmark = pytest.mark.comfyui
COMFY = os.environ.get("COMFYUI_ROOT")
PACK_DIR_NAME = "hrinversion"
FILES = {wf.SOURCE_CKPT: "tiny_source.safetensors", wf.TARGET_CKPT: "tiny_target.safetensors"}
OTHER_CKPT = "unrelated_128px.safetensors"            # not fine-tuned from the source: cannot be mixed with it


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Comfy:
    """A ComfyUI server subprocess and a few calls of its HTTP API."""

    def __init__(self, root: Path, port: int, log: Path):
        self.root, self.port, self.log = root, port, log
        self.url = f"http://127.0.0.1:{port}"
        self.client_id = str(uuid.uuid4())
        self.messages = []            # websocket messages (dicts); binary preview frames as ("preview", n_bytes)
        self.proc = None

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            data = r.read()
            return json.loads(data) if r.headers.get_content_type() == "application/json" else data

    def post(self, path: str, body: dict):
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                text = r.read()
                return r.status, (json.loads(text) if text.strip() else {})
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def queue(self, graph: dict) -> str:
        status, body = self.post("/prompt", {"prompt": graph, "client_id": self.client_id})
        assert status == 200, json.dumps(body, indent=1)[:3000]
        return body["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 400) -> dict:
        t0 = time.time()
        while time.time() - t0 < timeout:
            h = self.get(f"/history/{prompt_id}")
            if prompt_id in h and h[prompt_id].get("status", {}).get("completed") is not None and (
                    h[prompt_id]["status"].get("status_str") in ("success", "error")):
                return h[prompt_id]
            time.sleep(0.5)
        raise AssertionError(f"prompt {prompt_id} did not finish in {timeout} s; log tail:\n{self.tail()}")

    def tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""

    def listen(self):
        """Collect websocket messages in a thread (aiohttp is a ComfyUI dependency)."""
        try:
            import aiohttp  # noqa: F401
        except ImportError:
            return False

        def run():
            import asyncio

            import aiohttp

            async def main():
                async with aiohttp.ClientSession() as s:
                    async with s.ws_connect(f"{self.url}/ws?clientId={self.client_id}") as ws:
                        async for msg in ws:
                            if msg.type == aiohttp.WSMsgType.TEXT:
                                self.messages.append(json.loads(msg.data))
                            elif msg.type == aiohttp.WSMsgType.BINARY:
                                self.messages.append(("preview", len(msg.data)))
            try:
                asyncio.run(main())
            except Exception:
                pass

        threading.Thread(target=run, daemon=True).start()
        time.sleep(1.0)
        return True


def _write_models(base: Path) -> dict:
    from hrinv.io.checkpoints import save_generator

    (base / "models" / "stylegan2").mkdir(parents=True)
    (base / "models" / "vgg").mkdir(parents=True)
    (base / "models" / "facerecog").mkdir(parents=True)
    G_s, G_t = tiny_generators()
    save_generator(G_s, base / "models" / "stylegan2" / FILES[wf.SOURCE_CKPT])
    save_generator(G_t, base / "models" / "stylegan2" / FILES[wf.TARGET_CKPT])
    from hrinv.generator.stylegan2 import Generator

    torch.manual_seed(0)
    save_generator(Generator(**{**TINY_KWARGS, "img_resolution": 128}), base / "models" / "stylegan2" / OTHER_CKPT)
    files = dict(FILES)
    caffe = SHARED_WEIGHTS / "vgg16_imagenet_caffe.safetensors"
    if caffe.exists():
        os.symlink(caffe, base / "models" / "vgg" / caffe.name)
        files[wf.VGG_FILE] = caffe.name
    else:
        from safetensors.torch import save_file

        sd = {f"features.{k}": v.contiguous() for k, v in random_vgg().features.state_dict().items()}
        save_file(sd, str(base / "models" / "vgg" / "vgg16_random.safetensors"))
        files[wf.VGG_FILE] = "vgg16_random.safetensors"
    dlib = SHARED_WEIGHTS / wf.FACE_FILE
    if dlib.exists():
        os.symlink(dlib, base / "models" / "facerecog" / dlib.name)
        files[wf.FACE_FILE] = dlib.name
    else:
        from hrinv.faceid.irse50 import IRSE50

        torch.save(IRSE50().state_dict(), base / "models" / "facerecog" / "irse50_random.pth")
        files[wf.FACE_FILE] = "irse50_random.pth"
    return files


def _write_inputs(folder: Path) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    imgs = face_images(4, size=96, seed=7)
    for name, img in zip([wf.CONTENT_IMAGE] + wf.REFERENCE_IMAGES, imgs):
        Image.fromarray((img.numpy() * 255).round().astype("uint8")).save(folder / name)


@pytest.fixture(scope="module")
def comfy(tmp_path_factory):
    if not COMFY:
        pytest.skip("set COMFYUI_ROOT to a ComfyUI checkout (>= 0.3.64) to run the real-host tests")
    root = Path(COMFY).resolve()
    if not (root / "main.py").exists():
        pytest.skip(f"COMFYUI_ROOT={root} has no main.py")
    python = os.environ.get("COMFYUI_PYTHON", sys.executable)
    base = tmp_path_factory.mktemp("comfy_host")
    for sub in ("custom_nodes", "user", "output", "temp"):
        (base / sub).mkdir()
    os.symlink(REPO, base / "custom_nodes" / PACK_DIR_NAME)          # the only custom node folder ComfyUI scans
    files = _write_models(base)
    _write_inputs(base / "input")
    yaml = base / "extra_model_paths.yaml"
    yaml.write_text(f"hrinv_test:\n  base_path: {base}\n"
                    f"  hrinv_stylegan: models/stylegan2\n  hrinv_vgg: models/vgg\n  hrinv_faceid: models/facerecog\n")
    port = _free_port()
    server = Comfy(base, port, base / "comfyui.log")
    cmd = [python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--disable-auto-launch",
           "--base-directory", str(base), "--extra-model-paths-config", str(yaml),
           "--input-directory", str(base / "input"),
           "--output-directory", str(base / "output"), "--temp-directory", str(base / "temp"),
           "--user-directory", str(base / "user"), "--database-url", "sqlite:///:memory:"]
    with open(server.log, "wb") as log:
        server.proc = subprocess.Popen(cmd, cwd=root, stdout=log, stderr=subprocess.STDOUT)
    try:
        t0 = time.time()
        while True:
            if server.proc.poll() is not None:
                pytest.fail(f"ComfyUI exited with {server.proc.returncode}:\n{server.tail()}")
            try:
                server.get("/system_stats")
                break
            except OSError:
                if time.time() - t0 > 180:
                    pytest.fail(f"ComfyUI did not answer in 180 s:\n{server.tail()}")
                time.sleep(0.5)
        server.files = files
        server.startup_s = time.time() - t0
        server.ws = server.listen()
        yield server
    finally:
        server.proc.terminate()
        try:
            server.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.proc.kill()


@pytest.fixture(scope="module")
def real_info(comfy):
    return comfy.get("/object_info")


def test_pack_loads_with_every_node(comfy, real_info):
    ours = sorted(k for k in real_info if k.startswith("HRInv_"))
    from test_nodes_schema import EXPECTED

    assert set(ours) == EXPECTED, ours
    log = comfy.tail(200000)
    loaded = [l for l in log.splitlines() if "HRInversion" in l and "nodes from" in l]
    assert len(loaded) == 1, loaded                                # one copy of the pack, and it is this checkout
    assert f"nodes from {REPO / 'nodes'}" in loaded[0] or f"nodes from {comfy.root}" in loaded[0], loaded[0]
    assert f"hrinv from {REPO / 'hrinv'}" in loaded[0], loaded[0]
    print("\n" + loaded[0].strip())
    assert "IMPORT FAILED" not in "\n".join(l for l in log.splitlines() if PACK_DIR_NAME in l)
    assert "could not load the nodes" not in log
    assert not any(PACK_DIR_NAME in l and ("Cannot import" in l or "Error while calling" in l)
                   for l in log.splitlines()), log[-6000:]
    for line in log.splitlines():
        if PACK_DIR_NAME in line and "seconds" in line:
            print("\n" + line.strip())                                                 # import time of the pack
    stats = comfy.get("/system_stats")
    print(f"\nComfyUI {stats['system'].get('comfyui_version')} torch {stats['system'].get('pytorch_version')} "
          f"started in {comfy.startup_s:.1f} s")


def test_stubs_agree_with_the_real_object_info(comfy, real_info, tmp_path):
    """The CI stubs are honest: our nodes' /object_info from the stubs equals the real one (file lists aside)."""
    with stubbed_pack(tmp_path) as h:
        stub = object_info(h.nodes)
    for nid, s in stub.items():
        r = json.loads(json.dumps(real_info[nid]))
        for d in (r, s):
            d.pop("python_module", None)
            for cat in ("required", "optional"):
                for name, spec in d["input"].get(cat, {}).items():
                    if len(spec) > 1 and "options" in spec[1] and name.endswith("_name") or name == "inr_head":
                        spec[1].pop("options", None)
        assert s == {k: v for k, v in r.items() if k in s}, nid
    for nid, core in wf.CORE_NODES.items():          # the checker's picture of the core nodes is right
        real = real_info[nid]
        assert real["output"] == core["output"] and real["output_node"] == core["output_node"]
        for cat, names in core["input_order"].items():
            assert real["input_order"][cat] == names
            for name in names:
                if cat != "hidden" and not isinstance(core["input"][cat][name][0], list):
                    assert real["input"][cat][name][0] == core["input"][cat][name][0]


def test_workflows_are_templates(comfy):
    templates = comfy.get("/workflow_templates")
    assert sorted(templates.get(PACK_DIR_NAME, [])) == sorted(wf.template_names())    # the api/ copies are not
    for stem in wf.template_names():
        q = urllib.parse.quote(stem)
        ui = comfy.get(f"/api/workflow_templates/{PACK_DIR_NAME}/{q}.json")
        assert ui == json.loads((wf.WORKFLOWS / f"{stem}.json").read_text())
        jpg = comfy.get(f"/api/workflow_templates/{PACK_DIR_NAME}/{q}.jpg")
        assert jpg[:3] == b"\xff\xd8\xff"


@pytest.mark.parametrize("name", [n for n in wf.WORKFLOW_SPECS if n not in wf.RUNS_AS_SHIPPED])
def test_template_with_missing_models_is_refused(comfy, real_info, name):
    """An unedited template names model files this host does not have: /prompt must refuse it (no output may run
    on its own and report success), and the error names the missing file and where we looked."""
    ui = json.loads((wf.WORKFLOWS / f"{wf.template_stem(name)}.json").read_text())
    graph = wf.ui_to_api(ui, real_info)
    status, body = comfy.post("/prompt", {"prompt": graph, "client_id": comfy.client_id})
    assert status == 400, body
    assert body["error"]["type"] == "prompt_outputs_failed_validation", body
    details = " ".join(e["details"] for n in body["node_errors"].values() for e in n["errors"])
    assert wf.SOURCE_CKPT in details and "Looked in" in details, details[:2000]
    # one model missing at a time (the others present): still refused as a whole, nothing runs
    present = wf.substitute(graph, comfy.files)
    for nid, node in graph.items():
        names = [v for k, v in node["inputs"].items() if k.endswith("_name")]
        if not node["class_type"].startswith(wf.MODEL_LOADER_PREFIX) or any(comfy.files.get(v) == v for v in names):
            continue                                  # this host has the template's own file (e.g. from ../shared)
        g = json.loads(json.dumps(present))
        g[nid] = node
        status, body = comfy.post("/prompt", {"prompt": g, "client_id": comfy.client_id})
        if status == 200:                             # do not leave a 1000-step run in the queue
            comfy.post("/queue", {"delete": [body.get("prompt_id")]})
            comfy.post("/interrupt", {})
        assert status == 400 and list(body["node_errors"]) == [nid], (name, nid, status, body)


def test_templates_load_in_the_real_editor(comfy):
    """Optional: open ComfyUI's own frontend in headless Chromium, load every template and export it to API format;
    it must equal example_workflows/api/, and no node may overlap another as the editor sizes them. Needs node,
    Chromium and playwright-core (HRINV_PLAYWRIGHT_NODE_MODULES)."""
    import shutil

    modules = os.environ.get("HRINV_PLAYWRIGHT_NODE_MODULES")
    chromium = os.environ.get("HRINV_CHROMIUM", shutil.which("chromium") or "")
    if not (modules and shutil.which("node") and chromium):
        pytest.skip("set HRINV_PLAYWRIGHT_NODE_MODULES (a node_modules with playwright-core) and have node + chromium")
    shots = Path(os.environ.get("HRINV_SCREENSHOTS") or comfy.root / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(["node", str(REPO / "tools" / "browser_templates_check.mjs"), comfy.url, PACK_DIR_NAME,
                          chromium, str(shots)], env={**os.environ, "NODE_PATH": modules}, capture_output=True,
                         text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])["templates"]
    names = wf.template_names()
    assert sorted(result) == sorted(names)
    for stem, r in result.items():
        name = names[stem]
        assert not r["errors"] and not r["missing"], (name, r)
        boxes = [{"id": k, "pos": [b[0], b[1] + wf.TITLE_H], "size": [b[2], b[3] - wf.TITLE_H]}
                 for k, b in r["boxes"].items()]                      # as the editor sized and placed them
        assert wf.overlaps({"nodes": boxes}) == [], (name, wf.overlaps({"nodes": boxes}))
        assert (shots / f"{stem}.png").stat().st_size > 10_000
        ours = json.loads((wf.API_DIR / f"{name}.json").read_text())
        exported = {k: {"class_type": v["class_type"],
                        "inputs": {i: x for i, x in v["inputs"].items()
                                   if not (v["class_type"] == "PreviewAny" and i == "preview")}}
                    for k, v in r["output"].items()}
        assert exported == {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in ours.items()}, name
    print(f"\nscreenshots of the templates in the editor: {shots}")


def test_model_folders_are_merged(comfy):
    assert FILES[wf.SOURCE_CKPT] in comfy.get("/models/hrinv_stylegan")
    assert comfy.files[wf.VGG_FILE] in comfy.get("/models/hrinv_vgg")


@pytest.mark.parametrize("name", list(wf.WORKFLOW_SPECS))
def test_ui_workflow_valid_against_real_host(comfy, real_info, name):
    ui = json.loads((wf.WORKFLOWS / f"{wf.template_stem(name)}.json").read_text())
    assert wf.check_ui(ui, real_info) == []


@pytest.mark.parametrize("name", list(wf.WORKFLOW_SPECS))
def test_api_workflow_runs(comfy, name):
    graph = wf.substitute(json.loads((wf.API_DIR / f"{name}.json").read_text()), comfy.files,
                          steps=2, size=64, lso_steps=2)
    t0 = time.time()
    h = comfy.wait(comfy.queue(graph))
    errors = [m for m in h["status"]["messages"] if m[0] == "execution_error"]
    assert h["status"]["status_str"] == "success", json.dumps(errors, indent=1)[:4000]
    saved = [img for out in h["outputs"].values() for img in out.get("images", []) if img.get("type") == "output"]
    assert saved, h["outputs"]
    if name == "hrinv_id_retrieval":
        texts = [t for out in h["outputs"].values() for t in out.get("text", [])]
        assert any("top-1" in t for t in texts), texts
    print(f"\n{name}: success in {time.time() - t0:.1f} s, {len(saved)} image(s) saved")


@pytest.mark.parametrize("name", wf.RUNS_AS_SHIPPED)
def test_bundled_template_runs_unedited(comfy, real_info, name):
    """The template made for a fresh install runs exactly as shipped (the editor file, turned into a prompt the way
    the editor does; its own step counts): only bundled models and pictures, nothing in this host's model folders is
    used. The stylised photo has the demo photo's size, its face changed and the rest of it did not."""
    import numpy as np
    from PIL import Image

    from hrinv import bundled

    ui = json.loads((wf.WORKFLOWS / f"{wf.template_stem(name)}.json").read_text())
    graph = wf.ui_to_api(ui, real_info)
    strip = lambda g: {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in g.items()}
    assert strip(graph) == strip(json.loads((wf.API_DIR / f"{name}.json").read_text()))
    assert not [v for n in graph.values() for v in n["inputs"].values() if isinstance(v, str) and v in comfy.files]
    t0 = time.time()
    h = comfy.wait(comfy.queue(graph), timeout=3000)                # 1395 s on a 2-core machine at load ~9
    errors = [m for m in h["status"]["messages"] if m[0] == "execution_error"]
    assert h["status"]["status_str"] == "success", json.dumps(errors, indent=1)[:4000]
    secs = time.time() - t0

    def saved(node_id):
        imgs = h["outputs"][node_id]["images"]
        assert len(imgs) == 1 and imgs[0]["type"] == "output", imgs
        p = comfy.root / "output" / imgs[0].get("subfolder", "") / imgs[0]["filename"]
        with Image.open(p) as im:
            return np.asarray(im.convert("RGB")).astype(np.float32)

    with Image.open(bundled.path("demo_photo.png")) as im:
        photo = np.asarray(im.convert("RGB")).astype(np.float32)
    out = saved("13")
    assert out.shape == photo.shape and saved("14").shape == (64, 64, 3)
    diff = np.abs(out - photo).max(axis=2)                                  # [H, W]
    changed = diff > 8
    assert changed.mean() > 0.01, changed.mean()                            # the face changed
    ys, xs = np.nonzero(diff > 1)                                           # anything changed at all ...
    box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1) / diff.size
    assert box < 0.5, box                                                   # ... lies in a face-sized box
    print(f"\n{name}: ran unedited (bundled models, {wf.BUNDLED_STEPS} + {wf.BUNDLED_STEPS} inversion and "
          f"{wf.BUNDLED_LSO_STEPS} LSO steps) in {secs:.0f} s; {changed.mean():.1%} of the photo changed")


def test_unchanged_rerun_is_cached(comfy):
    graph = wf.substitute(wf.wf_invert_face(), comfy.files, steps=2)
    comfy.wait(comfy.queue(graph))
    h = comfy.wait(comfy.queue(graph))
    cached = [m[1]["nodes"] for m in h["status"]["messages"] if m[0] == "execution_cached"]
    assert cached and {"1", "3", "11"} <= set(cached[0]), h["status"]["messages"]


def test_progress_and_previews_reach_the_client(comfy):
    if not comfy.ws:
        pytest.skip("no aiohttp in this interpreter for the websocket client")
    graph = wf.substitute(wf.wf_invert_face(), comfy.files, steps=6)
    graph["11"]["inputs"]["seed"] = 12345                       # not cached
    n0 = len(comfy.messages)
    pid = comfy.queue(graph)
    comfy.wait(pid)
    time.sleep(0.5)
    msgs = comfy.messages[n0:]
    prog = [m["data"] for m in msgs if isinstance(m, dict) and m.get("type") == "progress"
            and m["data"].get("prompt_id") == pid and m["data"].get("node") == "11"]
    assert prog and prog[-1]["value"] == prog[-1]["max"] == 6
    assert any(isinstance(m, tuple) and m[0] == "preview" for m in msgs)       # live preview frames


def test_cancel_midway(comfy):
    graph = wf.substitute(wf.wf_invert_face(), comfy.files, steps=5000)
    graph["11"]["inputs"]["seed"] = 777
    pid = comfy.queue(graph)
    t0 = time.time()
    while time.time() - t0 < 120:                               # wait until the inversion node runs
        q = comfy.get("/queue")
        if q["queue_running"] and any(isinstance(m, dict) and m.get("type") == "progress"
                                      and m["data"].get("prompt_id") == pid for m in comfy.messages):
            break
        if q["queue_running"] and not comfy.ws and time.time() - t0 > 15:
            break
        time.sleep(0.3)
    time.sleep(1.0)
    t_int = time.time()
    comfy.post("/interrupt", {})
    h = comfy.wait(pid, timeout=120)
    stop_s = time.time() - t_int
    kinds = [m[0] for m in h["status"]["messages"]]
    assert "execution_interrupted" in kinds, kinds
    assert stop_s < 30, f"took {stop_s:.1f} s to stop"
    # the server is still healthy: a normal run right after succeeds
    ok = comfy.wait(comfy.queue(wf.substitute(wf.wf_invert_face(), comfy.files, steps=1)))
    assert ok["status"]["status_str"] == "success"
    print(f"\ncancelled mid-run; stopped {stop_s:.2f} s after /interrupt")


def test_validation_failure_has_our_message(comfy):
    graph = wf.substitute(wf.wf_invert_face(), comfy.files)
    graph["1"]["inputs"]["ckpt_name"] = "no_such_generator.pkl"
    status, body = comfy.post("/prompt", {"prompt": graph, "client_id": comfy.client_id})
    assert status == 400 and body["error"]["type"] == "prompt_outputs_failed_validation"
    errs = body["node_errors"]["1"]["errors"]
    assert errs[0]["type"] == "custom_validation_failed"
    assert "no_such_generator.pkl" in errs[0]["details"] and "Looked in" in errs[0]["details"]
    assert "models/stylegan2" in errs[0]["details"].replace(os.sep, "/")
    graph = wf.substitute(wf.wf_invert_face(), comfy.files)
    graph["11"]["inputs"]["steps"] = 0
    status, body = comfy.post("/prompt", {"prompt": graph, "client_id": comfy.client_id})
    assert status == 400 and body["node_errors"]["11"]["errors"][0]["type"] == "value_smaller_than_min"


def test_runtime_error_is_our_message(comfy):
    graph = wf.substitute(wf.wf_paper_pipeline(), comfy.files, steps=1, lso_steps=1)
    graph["20"]["inputs"].update(schedule="custom list", lambdas="0.2, nope")
    h = comfy.wait(comfy.queue(graph))
    errs = [m[1] for m in h["status"]["messages"] if m[0] == "execution_error"]
    assert errs and errs[0]["node_type"] == "HRInv_LerpGenerators"
    assert "comma-separated" in errs[0]["exception_message"], errs[0]["exception_message"]


def test_forbidden_downsample_is_refused_by_prompt(comfy):
    graph = wf.substitute(wf.wf_invert_face(), comfy.files)
    graph["11"]["inputs"]["downsample"] = 16
    status, body = comfy.post("/prompt", {"prompt": graph, "client_id": comfy.client_id})
    assert status == 400, body
    err = body["node_errors"]["11"]["errors"][0]
    assert err["type"] == "custom_validation_failed" and "downsample is 16" in err["details"], err
    assert "InversionConfig" not in json.dumps(body)


def _run_error(comfy, graph, timeout=180):
    t0 = time.time()
    h = comfy.wait(comfy.queue(graph), timeout=timeout)
    errs = [m[1] for m in h["status"]["messages"] if m[0] == "execution_error"]
    assert h["status"]["status_str"] == "error" and errs, h["status"]
    return errs[0], time.time() - t0


def test_incompatible_generators_fail_before_the_inversions(comfy):
    graph = wf.substitute(wf.wf_paper_pipeline(), comfy.files, steps=5000, lso_steps=1)
    graph["2"]["inputs"]["ckpt_name"] = OTHER_CKPT
    err, secs = _run_error(comfy, graph)
    assert err["node_type"] == "HRInv_LerpGenerators", err
    assert "tiny_source.safetensors" in err["exception_message"] and OTHER_CKPT in err["exception_message"]
    assert not {"12", "13"} & set(err["executed"]), err["executed"]        # no inversion ran (5000 steps each)
    print(f"\nincompatible generators reported after {secs:.1f} s, executed first: {err['executed']}")


def test_style_batch_mismatch_fails_before_the_inversions(comfy):
    graph = wf.substitute(wf.wf_id_retrieval(), comfy.files, steps=5000, lso_steps=1)
    graph["16"] = {"class_type": "LoadImage", "inputs": {"image": wf.REFERENCE_IMAGES[1]}}
    graph["17"] = {"class_type": "LoadImage", "inputs": {"image": wf.REFERENCE_IMAGES[2]}}
    graph["18"] = {"class_type": "ImageBatch", "inputs": {"image1": ["15", 0], "image2": ["16", 0]}}
    graph["19"] = {"class_type": "ImageBatch", "inputs": {"image1": ["18", 0], "image2": ["17", 0]}}
    graph["13"]["inputs"]["image"] = ["19", 0]                       # 2 contents, 3 references
    err, secs = _run_error(comfy, graph)
    assert err["node_type"] == "HRInv_Invert" and "stopped before optimising" in err["exception_message"], err
    assert not {"12", "13"} & set(err["executed"]), err["executed"]
    assert secs < 120, secs
    print(f"\nstyle batch mismatch reported after {secs:.1f} s")
def test_hostile_model_files_keep_the_server_healthy(comfy):
    """Issue 11 in the real host: each hostile generator file fails its prompt with one of our typed errors, the
    server stays up, no payload runs, and a benign pickle loaded right after it (a fresh file, so the loader really
    runs) still works: nothing in the process was poisoned."""
    import hostile_files as H
    from io_pickle_tools import dumps, system_call
    from nodes_harness import TINY_KWARGS

    from hrinv import errors

    folder = comfy.root / "models" / "stylegan2"
    marker = comfy.root / "PWNED"
    G_s, _ = tiny_generators()
    sd = {k: v.contiguous() for k, v in G_s.state_dict().items()}
    benign = H.nvidia_snapshot_bytes(json.loads(json.dumps(TINY_KWARGS)), dict(sd))
    stride0 = dict(sd)
    stride0["mapping.fc0.weight"] = H.Call(H.GlobalRef("torch._utils", "_rebuild_tensor_v2"), (H.Call(
        H.GlobalRef("torch.storage", "_load_from_bytes"), (torch.zeros(1).storage().__reduce__()[1][0],)), 0,
        (20000, 20000), (0, 0), False, {}))
    hostile = {
        "h_bytearray.pkl": H.P2 + H._g("builtins", "bytearray") + H._long(3_000_000_000) + b"\x85R.",
        "h_build_poison.pkl": H.build_on_global("torch._utils", "_rebuild_tensor_v2", "slot_defaults"),
        "h_ext.pkl": H.P2 + b"\x82\xf0.",
        "h_system.pkl": dumps(system_call(f"touch {marker}")),
        "h_stride0.pkl": H.nvidia_snapshot_bytes(json.loads(json.dumps(TINY_KWARGS)), stride0),
        "h_truncated.pkl": benign[: len(benign) // 2],
    }
    H.write_generator_safetensors(folder / "h_zdim.safetensors", {**TINY_KWARGS, "z_dim": 20000, "w_dim": 20000},
                                  sd=sd)
    hostile["h_zdim.safetensors"] = None
    ours = set(errors.__all__)
    for i, (name, data) in enumerate(hostile.items()):
        if data is not None:
            (folder / name).write_bytes(data)
        graph = wf.substitute(wf.wf_invert_face(), comfy.files, steps=1)
        graph.pop("14", None)  # an input preview in older templates
        graph["1"]["inputs"]["ckpt_name"] = name
        t0 = time.time()
        h = comfy.wait(comfy.queue(graph), timeout=120)
        errs = [m[1] for m in h["status"]["messages"] if m[0] == "execution_error"]
        assert errs, (name, h["status"])
        assert errs[0]["exception_type"].split(".")[-1] in ours, (name, errs[0]["exception_type"],
                                                                  errs[0]["exception_message"][:300])
        assert time.time() - t0 < 60 and comfy.proc.poll() is None, name
        ok = f"ok_{i}.pkl"
        (folder / ok).write_bytes(benign)
        graph["1"]["inputs"]["ckpt_name"] = ok
        h = comfy.wait(comfy.queue(graph), timeout=300)
        assert h["status"]["status_str"] == "success", (name, h["status"], comfy.tail(2000))
    assert comfy.get("/system_stats") and not marker.exists()
