"""The pack inside a real ComfyUI (``pytest -m comfyui``; skipped unless ``COMFYUI_ROOT`` is set).

Starts ``main.py --cpu`` from ``COMFYUI_ROOT`` in a subprocess (``COMFYUI_PYTHON``, default: the interpreter running
pytest) on a free local port. An ``extra_model_paths.yaml`` in a temporary folder adds that folder's
``custom_nodes/`` (holding a link to this repository) and its ``models/`` sub-folders for our model keys, so the
checkout is used as it is and nothing is copied into ComfyUI. The models are small ones made here: two 64 px
generators (source and a "fine-tuned" target) saved with ``save_generator``, the team's VGG16 caffe weights from
../shared when present (else random VGG16 weights), and dlib's face network from ../shared when present (else random
IR-SE50 weights). Input pictures are made by our code too.

Then: every node is registered and its /object_info agrees with what the CI stubs produce; the workflows show up as
templates; every API workflow runs to success with the checkpoint names substituted and small step counts; an
unchanged re-run is served from the cache; one run is cancelled mid-way; one prompt fails validation with our
message; one fails at run time with our message.

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
import urllib.request
import uuid
from pathlib import Path

import pytest
import torch
from nodes_harness import REPO, SHARED_WEIGHTS, face_images, object_info, random_vgg, stubbed_pack, tiny_generators

from tools import hrinv_workflows as wf

pytestmark = pytest.mark.comfyui
COMFY = os.environ.get("COMFYUI_ROOT")
PACK_DIR_NAME = "hrinversion"
FILES = {wf.SOURCE_CKPT: "tiny_source.safetensors", wf.TARGET_CKPT: "tiny_target.safetensors"}


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
    os.symlink(REPO, base / "custom_nodes" / PACK_DIR_NAME)
    files = _write_models(base)
    _write_inputs(base / "input")
    yaml = base / "extra_model_paths.yaml"
    yaml.write_text(f"hrinv_test:\n  base_path: {base}\n  custom_nodes: custom_nodes\n"
                    f"  hrinv_stylegan: models/stylegan2\n  hrinv_vgg: models/vgg\n  hrinv_faceid: models/facerecog\n")
    port = _free_port()
    server = Comfy(base, port, base / "comfyui.log")
    cmd = [python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--disable-auto-launch",
           "--extra-model-paths-config", str(yaml), "--input-directory", str(base / "input"),
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
    assert sorted(templates.get(PACK_DIR_NAME, [])) == sorted(wf.WORKFLOW_SPECS)      # the api/ copies are not
    for name in wf.WORKFLOW_SPECS:
        ui = comfy.get(f"/api/workflow_templates/{PACK_DIR_NAME}/{name}.json")
        assert ui == json.loads((REPO / "workflows" / f"{name}.json").read_text())
        jpg = comfy.get(f"/api/workflow_templates/{PACK_DIR_NAME}/{name}.jpg")
        assert jpg[:3] == b"\xff\xd8\xff"


def test_templates_load_in_the_real_editor(comfy):
    """Optional: open ComfyUI's own frontend in headless Chromium, load every template and export it to API format;
    it must equal workflows/api/. Needs node, Chromium and playwright-core (HRINV_PLAYWRIGHT_NODE_MODULES)."""
    import shutil

    modules = os.environ.get("HRINV_PLAYWRIGHT_NODE_MODULES")
    chromium = os.environ.get("HRINV_CHROMIUM", shutil.which("chromium") or "")
    if not (modules and shutil.which("node") and chromium):
        pytest.skip("set HRINV_PLAYWRIGHT_NODE_MODULES (a node_modules with playwright-core) and have node + chromium")
    out = subprocess.run(["node", str(REPO / "tools" / "browser_templates_check.mjs"), comfy.url, PACK_DIR_NAME,
                          chromium], env={**os.environ, "NODE_PATH": modules}, capture_output=True, text=True,
                         timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])["templates"]
    assert sorted(result) == sorted(wf.WORKFLOW_SPECS)
    for name, r in result.items():
        assert not r["errors"] and not r["missing"], (name, r)
        ours = json.loads((REPO / "workflows" / "api" / f"{name}.json").read_text())
        exported = {k: {"class_type": v["class_type"],
                        "inputs": {i: x for i, x in v["inputs"].items()
                                   if not (v["class_type"] == "PreviewAny" and i == "preview")}}
                    for k, v in r["output"].items()}
        assert exported == {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in ours.items()}, name


def test_model_folders_are_merged(comfy):
    assert FILES[wf.SOURCE_CKPT] in comfy.get("/models/hrinv_stylegan")
    assert comfy.files[wf.VGG_FILE] in comfy.get("/models/hrinv_vgg")


@pytest.mark.parametrize("name", list(wf.WORKFLOW_SPECS))
def test_ui_workflow_valid_against_real_host(comfy, real_info, name):
    ui = json.loads((REPO / "workflows" / f"{name}.json").read_text())
    assert wf.check_ui(ui, real_info) == []


@pytest.mark.parametrize("name", list(wf.WORKFLOW_SPECS))
def test_api_workflow_runs(comfy, name):
    graph = wf.substitute(json.loads((REPO / "workflows" / "api" / f"{name}.json").read_text()), comfy.files,
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
    # With the input preview (node 14) the graph still has one valid output: ComfyUI runs that and reports ours.
    status, body = comfy.post("/prompt", {"prompt": graph, "client_id": comfy.client_id})
    assert status == 200 and body["node_errors"]["1"]["errors"][0]["type"] == "custom_validation_failed"
    comfy.wait(body["prompt_id"])
    del graph["14"]
    status, body = comfy.post("/prompt", {"prompt": graph, "client_id": comfy.client_id})
    assert status == 400 and body["error"]["type"] == "prompt_outputs_failed_validation"
    errs = body["node_errors"]["1"]["errors"]
    assert errs[0]["type"] == "custom_validation_failed"
    assert "no_such_generator.pkl" in errs[0]["details"] and "Looked in" in errs[0]["details"]
    assert "models/stylegan2" in errs[0]["details"].replace(os.sep, "/")
    graph = wf.substitute(wf.wf_invert_face(), comfy.files)
    del graph["14"]
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
