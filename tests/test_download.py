"""``hrinv download`` against a local HTTP server in a thread (no other network access): a full download, a sha256
mismatch, a connection dropped midway and resumed with HTTP Range (and restarted by a server without Range), a kept
``.part`` resumed by the next run, clean-up with ``--no-resume``, a .bz2 source, the destination folders, and that
nothing else in hrinv or the node pack opens a connection."""

import bz2
import hashlib
import http.server
import os
import re
import socket
import sys
import threading
from pathlib import Path

import pytest

from hrinv import cli
from hrinv.download import COMFY_FOLDERS, MODELS, DownloadError, ModelFile, comfyui_models_dir, destination, download

REPO = Path(__file__).resolve().parents[1]
PAYLOAD = bytes((i * 7 + i // 251) % 256 for i in range(300_000))      # 300 kB, not a repeating block
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class _Server:
    """Serves ``files`` {path: bytes}. ``ranges``: honour ``Range: bytes=N-`` (206) or ignore it (200).
    ``drops``: the next ``drops`` responses stop after ``drop_at`` bytes of the body and close the connection.
    ``requests``: (path, Range header) of every request."""

    def __init__(self, files, ranges=True, drops=0, drop_at=100_000):
        self.files, self.ranges, self.drops, self.drop_at, self.requests = files, ranges, drops, drop_at, []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                server.requests.append((self.path, rng))
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                if rng and server.ranges:
                    start = int(re.match(r"bytes=(\d+)-", rng).group(1))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.drops > 0:
                    server.drops -= 1
                    self.wfile.write(body[:server.drop_at])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def _model(sha=SHA, unpack=None):
    return ModelFile("model.bin", "stylegan2", "test file", None, sha, len(PAYLOAD), "test", "the test server",
                     unpack=unpack)


def _fast(**kw):
    return dict(retry_wait=0.0, quiet=True, timeout=10, **kw)


def test_full_download_checks_sha_and_leaves_no_part(tmp_path):
    with _Server({"/m.bin": PAYLOAD}) as s:
        p = download(_model(), tmp_path / "dest", url=s.url + "/m.bin", **_fast())
    assert p == tmp_path / "dest" / "model.bin"
    assert p.read_bytes() == PAYLOAD
    assert sorted(os.listdir(tmp_path / "dest")) == ["model.bin"]
    assert s.requests == [("/m.bin", None)]


def test_sha_mismatch_deletes_the_file_and_says_so(tmp_path):
    bad = PAYLOAD[:-1] + b"\x00"
    with _Server({"/m.bin": bad}) as s, pytest.raises(DownloadError) as e:
        download(_model(), tmp_path, url=s.url + "/m.bin", **_fast())
    msg = str(e.value)
    assert "sha256 mismatch" in msg and SHA in msg and hashlib.sha256(bad).hexdigest() in msg
    assert "deleted" in msg
    assert os.listdir(tmp_path) == []


def test_dropped_connection_is_resumed_with_range(tmp_path):
    with _Server({"/m.bin": PAYLOAD}, drops=1, drop_at=120_000) as s:
        p = download(_model(), tmp_path, url=s.url + "/m.bin", **_fast(retries=2))
    assert p.read_bytes() == PAYLOAD
    assert s.requests == [("/m.bin", None), ("/m.bin", "bytes=120000-")]
    assert os.listdir(tmp_path) == ["model.bin"]


def test_server_without_range_support_restarts_from_zero(tmp_path):
    logs = []
    with _Server({"/m.bin": PAYLOAD}, ranges=False, drops=1, drop_at=50_000) as s:
        p = download(_model(), tmp_path, url=s.url + "/m.bin", log=logs.append, **_fast(retries=1))
    assert p.read_bytes() == PAYLOAD
    assert s.requests[1] == ("/m.bin", "bytes=50000-")        # asked to resume, got the whole file (200)
    assert any("does not resume" in m for m in logs)


def test_interrupted_download_keeps_part_then_the_next_run_resumes(tmp_path):
    with _Server({"/m.bin": PAYLOAD}, drops=5, drop_at=70_000) as s:
        with pytest.raises(DownloadError) as e:
            download(_model(), tmp_path, url=s.url + "/m.bin", **_fast(retries=0))
        assert "run the same command again to resume" in str(e.value)
        part = tmp_path / "model.bin.part"
        assert part.stat().st_size == 70_000 and not (tmp_path / "model.bin").exists()
        s.drops = 0
        p = download(_model(), tmp_path, url=s.url + "/m.bin", **_fast(retries=0))
    assert p.read_bytes() == PAYLOAD and not part.exists()
    assert s.requests[-1] == ("/m.bin", "bytes=70000-")


def test_no_resume_cleans_up_the_partial_file(tmp_path):
    with _Server({"/m.bin": PAYLOAD}, drops=5, drop_at=70_000) as s, pytest.raises(DownloadError) as e:
        download(_model(), tmp_path, url=s.url + "/m.bin", keep_partial=False, **_fast(retries=1))
    assert "partial file was deleted" in str(e.value)
    assert os.listdir(tmp_path) == []


def test_complete_part_answered_416_is_verified_and_renamed(tmp_path):
    (tmp_path / "model.bin.part").write_bytes(PAYLOAD)
    with _Server({"/m.bin": PAYLOAD}) as s:
        p = download(_model(), tmp_path, url=s.url + "/m.bin", **_fast())
    assert p.read_bytes() == PAYLOAD and s.requests == [("/m.bin", f"bytes={len(PAYLOAD)}-")]


def test_bz2_source_is_unpacked_and_the_unpacked_sha_checked(tmp_path):
    with _Server({"/m.bin.bz2": bz2.compress(PAYLOAD)}) as s:
        p = download(_model(unpack="bz2"), tmp_path, url=s.url + "/m.bin.bz2", **_fast())
    assert p.read_bytes() == PAYLOAD and os.listdir(tmp_path) == ["model.bin"]


def test_unknown_sha_prints_the_computed_one_and_existing_files_are_kept(tmp_path):
    logs = []
    with _Server({"/m.bin": PAYLOAD}) as s:
        download(_model(sha=None), tmp_path, url=s.url + "/m.bin", log=logs.append, **_fast())
        assert any(SHA in m and "no published sha256" in m for m in logs)
        download(_model(), tmp_path, url=s.url + "/m.bin", **_fast())       # there, sha matches: no request
        assert len(s.requests) == 1
        (tmp_path / "model.bin").write_bytes(b"something else")
        with pytest.raises(DownloadError, match="--force"):
            download(_model(), tmp_path, url=s.url + "/m.bin", **_fast())
        download(_model(), tmp_path, url=s.url + "/m.bin", force=True, **_fast())
    assert (tmp_path / "model.bin").read_bytes() == PAYLOAD


def test_refuses_non_http_urls_and_models_without_a_link(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(PAYLOAD)
    with pytest.raises(DownloadError, match="only http"):
        download(_model(), tmp_path / "d", url=src.as_uri(), **_fast())
    with pytest.raises(DownloadError, match="no direct download link"):
        download("model_ir_se50.pth", tmp_path / "d", **_fast())


def test_cli_sha_mismatch_exits_1_and_unknown_sha_succeeds(tmp_path, capsys):
    with _Server({"/v.pth": PAYLOAD}) as s:
        rc = cli.main(["download", "vgg16-397923af.pth", "--url", s.url + "/v.pth", "--dir", str(tmp_path), "-q"])
        err = capsys.readouterr().err
        assert rc == 1 and "sha256 mismatch" in err and MODELS["vgg16-397923af.pth"].sha256 in err
        assert os.listdir(tmp_path) == []
        rc = cli.main(["download", "ffhq.pkl", "--url", s.url + "/v.pth", "--comfyui", str(_comfy_tree(tmp_path))])
        out = capsys.readouterr()
    assert rc == 0 and SHA in out.err
    assert (tmp_path / "ComfyUI" / "models" / "stylegan2" / "ffhq.pkl").read_bytes() == PAYLOAD


def test_cli_list_and_usage_errors(capsys):
    assert cli.main(["download", "--list"]) == 0
    out = capsys.readouterr().out
    for m in MODELS.values():
        assert m.name in out
    assert cli.main(["download", "nope.pkl", "--dir", "x"]) == 2
    assert "unknown file" in capsys.readouterr().err
    assert cli.main(["download"]) == 2


def _comfy_tree(tmp_path):
    root = tmp_path / "ComfyUI"
    (root / "models").mkdir(parents=True, exist_ok=True)
    (root / "custom_nodes" / "pack" / "hrinv").mkdir(parents=True, exist_ok=True)
    return root


def test_destinations(tmp_path):
    m = MODELS["ffhq.pkl"]
    root = _comfy_tree(tmp_path)
    assert comfyui_models_dir(root / "custom_nodes" / "pack" / "hrinv" / "download.py") == root / "models"
    assert comfyui_models_dir(tmp_path / "elsewhere" / "hrinv" / "download.py") is None
    assert destination(m, dir=tmp_path / "d") == tmp_path / "d"
    assert destination(m, comfyui=root) == root / "models" / "stylegan2"
    with pytest.raises(DownloadError, match="models/ sub-folder"):
        destination(m, comfyui=tmp_path / "not-comfy")
    assert {MODELS[n].folder for n in MODELS} <= set(COMFY_FOLDERS)


def test_folders_match_the_node_pack(tmp_path):
    from nodes_harness import stubbed_pack

    with stubbed_pack(tmp_path):
        comfy_mod = next(m for k, m in sys.modules.items() if k.endswith("nodes._comfy"))
        folders = {sub: key for key, (sub, _) in comfy_mod.MODEL_FOLDERS.items()}
        exts = {key: e for key, (_, e) in comfy_mod.MODEL_FOLDERS.items()}
    assert folders == COMFY_FOLDERS
    for m in MODELS.values():             # every file we fetch is one the loader of its folder lists
        assert os.path.splitext(m.name)[1] in exts[COMFY_FOLDERS[m.folder]], m.name


def test_nothing_else_opens_connections(monkeypatch, capsys):
    """Only hrinv/download.py may use a network client, and listing never connects."""
    offenders = []
    for p in list((REPO / "hrinv").rglob("*.py")) + list((REPO / "nodes").rglob("*.py")):
        if p.name == "download.py" and p.parent.name == "hrinv":
            continue
        text = p.read_text(encoding="utf-8")
        if re.search(r"urllib\.request|http\.client|import requests|urlopen|socket\.create_connection", text):
            offenders.append(str(p.relative_to(REPO)))
    assert offenders == []

    def no_network(*a, **k):
        raise AssertionError("network access")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    assert cli.main(["download", "--list"]) == 0
    assert "ffhq.pkl" in capsys.readouterr().out
