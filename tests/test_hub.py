"""minivit.checkpoints.hub and python -m minivit.hub: the manifest, resumable downloads, and Hugging Face cache resolution.

Downloads run against an http.server on 127.0.0.1 (with a hand-written Range handler); the Hub
path runs against a cache folder built here in huggingface_hub's on-disk layout with
HF_HUB_OFFLINE=1. Any connection to another host fails the test: nothing touches the network.
"""

import hashlib
import json
import os
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from minivit.commands import hub as hub_command
from minivit.checkpoints import hub
from minivit.common import cli
from minivit.common.errors import DownloadError

PAYLOAD = bytes(range(256)) * 40 + b"end"  # 10243 bytes, not a multiple of anything convenient
SHA = hashlib.sha256(PAYLOAD).hexdigest()
HTML = b"<!DOCTYPE html>\n<html><body>Sign in to continue</body></html>"


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Only loopback connections are allowed; proxies from the environment are ignored."""
    real_connect = socket.socket.connect

    def guarded(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if host not in ("127.0.0.1", "::1", "localhost"):
            raise AssertionError(f"test tried to reach the network: {address}")
        return real_connect(self, address)

    real_getaddrinfo = socket.getaddrinfo

    def guarded_lookup(host, *args, **kwargs):
        if host not in ("127.0.0.1", "::1", "localhost"):
            raise AssertionError(f"test tried to look up a network host: {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    monkeypatch.setattr(socket, "getaddrinfo", guarded_lookup)
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.delenv(hub.WEIGHTS_DIR_ENV, raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


class Handler(BaseHTTPRequestHandler):
    """Serves server.routes[path] = (body, content_type, status, honour_range)."""

    def do_GET(self):
        self.server.requests.append((self.path, self.headers.get("Range")))
        if self.path not in self.server.routes:
            self.send_error(404, "Not Found")
            return
        body, ctype, status, honour_range = self.server.routes[self.path]
        start = 0
        m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if m and honour_range:
            start = int(m[1])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        chunk = body[start:]
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(chunk)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.end_headers()
        self.wfile.write(chunk)

    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.routes, srv.requests = {}, []
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    thread = threading.Thread(target=srv.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def serve(srv, path, body=PAYLOAD, ctype="application/octet-stream", status=200, honour_range=True):
    srv.routes[path] = (body, ctype, status, honour_range)
    return srv.url + path


def one_line(err) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


# ----------------------------------------------------------------------------- manifest

REQUIRED = {"name", "format", "urls", "sha256", "config", "trained_on"}
CONFIG_KEYS = {"preset", "image_size", "num_classes", "representation_size", "classifier"}


def test_manifest_entries_are_complete_and_unique():
    entries = hub.load_manifest()
    assert len(entries) >= 30
    names = [e["name"] for e in entries]
    assert len(names) == len(set(n.lower() for n in names)), "duplicate names (case-insensitive)"
    files = [e["file"] for e in entries if e.get("file")]
    assert len(files) == len(set(f.lower() for f in files)), "two entries would download to one file"
    for e in entries:
        assert REQUIRED <= set(e), e["name"]
        assert e["format"] in hub.FORMATS, e["name"]
        if e.get("shipped"):  # in the repository's weights/: no download, a hash to check it against
            assert e["format"] == "minivit" and e["urls"] == [] and re.fullmatch(r"[0-9a-f]{64}", e["sha256"])
            assert e["file"].endswith(".safetensors") and (Path(hub.MANIFEST_PATH).parent / e["file"]).is_file()
            continue
        assert e["urls"] and all(u.startswith("https://") for u in e["urls"]), e["name"]
        assert e["sha256"] is None or re.fullmatch(r"[0-9a-f]{64}", e["sha256"]), e["name"]
        assert CONFIG_KEYS <= set(e["config"]), e["name"]
        if e["format"] == "transformers":
            assert e["repo"] == e["name"] and hub._REPO_ID.match(e["repo"])
        else:
            assert e["file"].endswith(".npz") and not Path(e["file"]).is_absolute()
            assert e["urls"][0].endswith("/" + e["file"].split("/")[-1]), e["name"]


def test_manifest_covers_the_brief():
    names = set(hub.list_checkpoints())
    for m in ("B_16", "B_32", "L_16", "L_32", "H_14"):
        assert f"imagenet21k/ViT-{m}" in names
    assert "imagenet21k+imagenet2012/ViT-B_16" in names
    assert "augreg/B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.01-res_224" in names
    assert "google/vit-base-patch16-224-in21k" in names
    b16 = hub.manifest_entry("imagenet21k/ViT-B_16")
    assert b16["urls"] == ["https://storage.googleapis.com/vit_models/imagenet21k/ViT-B_16.npz"]
    assert b16["config"]["representation_size"] == 768 and b16["config"]["num_classes"] == 21843
    ft = hub.manifest_entry("imagenet21k+imagenet2012/ViT-B_16")
    assert ft["config"]["image_size"] == 384 and ft["config"]["representation_size"] is None


def test_manifest_presets_build_configs():
    from minivit.model import config
    for e in hub.load_manifest():
        cfg = hub.checkpoint_config(e["name"])
        c = e["config"]
        base = config.config_from_name(c["preset"])
        # the preset's sizes, unless the entry states its own (the shipped FER model is narrower than an S)
        assert (cfg.dim, cfg.patch_size) == (c.get("dim", base.dim), c.get("patch_size", base.patch_size)), e["name"]
        assert cfg.image_size == c["image_size"] and cfg.num_classes == c["num_classes"], e["name"]
        if c["representation_size"] is not None:
            assert c["representation_size"] == cfg.dim, e["name"]


def test_manifest_entry_aliases():
    name = "augreg/Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0"
    assert hub.manifest_entry(name.upper())["name"] == name
    assert hub.manifest_entry("Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0.npz")["name"] == name
    assert hub.manifest_entry("ViT-H_14.npz")["name"] == "imagenet21k/ViT-H_14"
    assert hub.manifest_entry("no-such-thing") is None
    # The explicit alias picks the ImageNet-21k original, the file the ViT paper released.
    assert hub.manifest_entry("ViT-B_16")["name"] == "imagenet21k/ViT-B_16"
    assert hub.manifest_entry("ViT-B_16.npz")["name"] == "imagenet21k/ViT-B_16"


def test_shared_file_name_without_alias_is_ambiguous(monkeypatch):
    entries = [{"name": "a/X", "file": "a/X.npz"}, {"name": "b/X", "file": "b/X.npz"}]
    monkeypatch.setattr(hub, "load_manifest", lambda path=None: entries)
    with pytest.raises(DownloadError) as err:
        hub.manifest_entry("X.npz")
    msg = one_line(err)
    assert "a/X" in msg and "b/X" in msg and "ambiguous" in msg


# ----------------------------------------------------------------------------- download

def test_download_full(server, tmp_path):
    url = serve(server, "/ckpt.npz")
    dest = tmp_path / "sub" / "ckpt.npz"
    assert hub.download(url, dest, sha256=SHA, progress=False) == dest
    assert dest.read_bytes() == PAYLOAD
    assert not dest.with_name("ckpt.npz.part").exists()
    assert server.requests == [("/ckpt.npz", None)]


def test_download_resumes_from_part(server, tmp_path):
    url = serve(server, "/ckpt.npz")
    dest = tmp_path / "ckpt.npz"
    dest.with_name("ckpt.npz.part").write_bytes(PAYLOAD[:4000])
    hub.download(url, dest, sha256=SHA, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert server.requests == [("/ckpt.npz", "bytes=4000-")]


def test_download_restarts_when_server_ignores_range(server, tmp_path):
    url = serve(server, "/ckpt.npz", honour_range=False)
    dest = tmp_path / "ckpt.npz"
    dest.with_name("ckpt.npz.part").write_bytes(b"stale bytes from another file")
    hub.download(url, dest, sha256=SHA, progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_download_complete_part_gets_416(server, tmp_path):
    url = serve(server, "/ckpt.npz")
    dest = tmp_path / "ckpt.npz"
    dest.with_name("ckpt.npz.part").write_bytes(PAYLOAD)  # finished, but never renamed
    hub.download(url, dest, sha256=SHA, progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_download_sha256_mismatch_deletes_file(server, tmp_path):
    url = serve(server, "/ckpt.npz")
    dest = tmp_path / "ckpt.npz"
    wrong = "0" * 64
    with pytest.raises(DownloadError) as err:
        hub.download(url, dest, sha256=wrong, progress=False)
    msg = one_line(err)
    assert "ckpt.npz" in msg and wrong in msg and SHA in msg and "deleted" in msg
    assert not dest.exists() and not dest.with_name("ckpt.npz.part").exists()


@pytest.mark.parametrize("ctype", ["text/html; charset=utf-8", "application/octet-stream"])
def test_download_html_page_is_an_error(server, tmp_path, ctype):
    url = serve(server, "/login", body=HTML, ctype=ctype)
    dest = tmp_path / "ckpt.npz"
    with pytest.raises(DownloadError) as err:
        hub.download(url, dest, progress=False)
    assert "HTML" in one_line(err) and url in str(err.value)
    assert not dest.exists() and not dest.with_name("ckpt.npz.part").exists()


def test_download_404(server, tmp_path):
    url = server.url + "/missing.npz"
    with pytest.raises(DownloadError) as err:
        hub.download(url, tmp_path / "missing.npz", progress=False)
    msg = one_line(err)
    assert "404" in msg and url in msg


def test_download_connection_refused_says_what_to_fetch(tmp_path):
    with socket.socket() as s:  # a port that nobody listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/ViT-B_16.npz"
    dest = tmp_path / "w" / "ViT-B_16.npz"
    with pytest.raises(DownloadError) as err:
        hub.download(url, dest, progress=False)
    msg = one_line(err)
    assert f"fetch {url} and save it as {dest}" in msg


# ----------------------------------------------------------------------------- resolve (manifest)

@pytest.fixture
def tiny_manifest(server, tmp_path, monkeypatch):
    url = serve(server, "/tiny/Tiny_8-test.npz")
    entry = {
        "name": "test/Tiny_8-test", "format": "vit_jax", "urls": [url], "file": "test/Tiny_8-test.npz",
        "sha256": SHA, "trained_on": "nothing",
        "config": {"preset": "Ti/16", "image_size": 32, "num_classes": 10, "representation_size": None,
                   "classifier": "token"},
    }
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"schema": 1, "checkpoints": [entry]}))
    monkeypatch.setattr(hub, "MANIFEST_PATH", path)
    return entry


def test_resolve_existing_path(tmp_path):
    f = tmp_path / "mine.npz"
    f.write_bytes(b"x")
    assert hub.resolve(f) == f
    assert hub.resolve(str(tmp_path)) == tmp_path


def test_resolve_manifest_name_downloads_once(server, tiny_manifest, tmp_path):
    wdir = tmp_path / "weights"
    path = hub.resolve("TEST/tiny_8-TEST", weights_dir=wdir)
    assert path == wdir / "test" / "Tiny_8-test.npz" and path.read_bytes() == PAYLOAD
    assert hub.resolve("Tiny_8-test.npz", weights_dir=wdir) == path  # file name alias, no new request
    assert len(server.requests) == 1


def test_resolve_weights_dir_from_env(server, tiny_manifest, tmp_path, monkeypatch):
    monkeypatch.setenv(hub.WEIGHTS_DIR_ENV, str(tmp_path / "env_weights"))
    assert hub.resolve("test/Tiny_8-test") == tmp_path / "env_weights" / "test" / "Tiny_8-test.npz"


def test_resolve_offline_names_url_and_path(server, tiny_manifest, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DownloadError) as err:
        hub.resolve("test/Tiny_8-test", weights_dir=tmp_path)
    msg = one_line(err)
    assert f"fetch {tiny_manifest['urls'][0]} and save it as {tmp_path / 'test' / 'Tiny_8-test.npz'}" in msg
    assert server.requests == []


def test_resolve_unknown_suggests_close_names(tmp_path, monkeypatch):
    with pytest.raises(DownloadError) as err:
        hub.resolve("ViT-B_61")
    assert "did you mean" in one_line(err) and "imagenet21k/ViT-B_16" in str(err.value)
    # "org/name" goes to the Hub (offline here), and a near-miss manifest name is still suggested.
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(DownloadError) as err:
        hub.resolve("imagenet21k/ViT-B_61", offline=True)
    assert "imagenet21k/ViT-B_16" in one_line(err)
    with pytest.raises(DownloadError) as err:
        hub.resolve("./runs/missing.npz")
    assert "no such file" in one_line(err)


# ----------------------------------------------------------------------------- resolve (Hugging Face cache)

REV = "0123456789abcdef0123456789abcdef01234567"


def make_hf_cache(cache: Path, repo_id: str, files: dict[str, bytes]) -> Path:
    """huggingface_hub's layout: models--org--name/{blobs/<hash>, snapshots/<rev>/<file> -> blob, refs/main}."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / REV
    (repo / "blobs").mkdir(parents=True)
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REV)
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        os.symlink(os.path.relpath(blob, snap), snap / name)
    return snap


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


CONFIG = json.dumps({"model_type": "vit", "hidden_size": 64}).encode()


def test_resolve_hf_repo_from_cache(hf_cache):
    snap = make_hf_cache(hf_cache, "someone/tiny-vit", {"config.json": CONFIG, "model.safetensors": b"st"})
    folder = hub.resolve("someone/tiny-vit")
    assert folder == snap and (folder / "model.safetensors").read_bytes() == b"st"


def test_resolve_hf_manifest_entry_from_cache(hf_cache):
    snap = make_hf_cache(hf_cache, "google/vit-base-patch16-224-in21k",
                         {"config.json": CONFIG, "model.safetensors": b"st"})
    assert hub.resolve("GOOGLE/vit-base-patch16-224-in21k") == snap


def test_resolve_hf_falls_back_to_pytorch_bin(hf_cache):
    snap = make_hf_cache(hf_cache, "someone/old-vit", {"config.json": CONFIG, "pytorch_model.bin": b"pt"})
    assert hub.resolve("someone/old-vit") == snap


def test_resolve_hf_not_cached_offline(hf_cache):
    with pytest.raises(DownloadError) as err:
        hub.resolve("someone/not-cached")
    msg = one_line(err)
    assert "someone/not-cached" in msg and "offline" in msg and str(hf_cache) in msg


def test_resolve_hf_cache_without_weights(hf_cache):
    make_hf_cache(hf_cache, "someone/no-weights", {"config.json": CONFIG})
    with pytest.raises(DownloadError) as err:
        hub.resolve("someone/no-weights")
    assert "pytorch_model.bin" in one_line(err)


# ----------------------------------------------------------------------------- CLI

def test_cli_list_and_download(server, tiny_manifest, tmp_path, capsys):
    assert hub_command.main(["list"]) == 0
    assert "test/Tiny_8-test" in capsys.readouterr().out
    assert hub_command.main(["download", "test/Tiny_8-test", "--weights-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "test" / "Tiny_8-test.npz")
    assert cli.run(hub_command.main, ["download", "nope"]) == 2  # bad input: one line on stderr, exit 2, as every minivit command
    assert capsys.readouterr().err.startswith("error: unknown checkpoint")


# ----------------------------------------------------------------------------- mistyped local paths

@pytest.mark.parametrize("typed", ["runs/nope", "weights/x.npz", "nothing.safetensors", "model.bin", "./nope",
                                   "runs/deeper/nope"])
def test_mistyped_local_path_is_a_missing_path_not_a_hub_failure(tmp_path, monkeypatch, typed):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()  # "runs/nope": the parent exists, so it is a local path, not a repo id
    (tmp_path / "weights").mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(DownloadError) as err:
        hub.resolve(typed, offline=True)
    msg = one_line(err)
    assert msg == f"{typed}: no such file or folder", msg  # names the path; says nothing of the Hub


def test_owner_name_without_local_parent_names_the_hub_too(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(DownloadError) as err:
        hub.resolve("someone/tiny-vit", offline=True)
    msg = one_line(err)
    assert msg.startswith("someone/tiny-vit: no such file or folder") and "Hugging Face" in msg


def test_cli_mistyped_path_exits_2_with_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    assert cli.run(hub_command.main, ["download", "runs/nope"]) == 2
    assert capsys.readouterr().err == "error: runs/nope: no such file or folder\n"
    with pytest.raises(SystemExit) as exited:  # argparse errors: one line, exit 2 too
        cli.run(hub_command.main, ["downlaod", "x"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: argument command") and err.count("\n") == 1


def test_list_names_an_entry_without_trained_on(tmp_path, monkeypatch, capsys):
    """A manifest entry without "trained_on" (a user's own manifest) is listed with '?', not a KeyError."""
    entry = {"name": "mine/Tiny_8", "format": "vit_jax", "urls": ["https://example.invalid/t.npz"], "file": "t.npz",
             "sha256": None, "config": {"preset": "Ti/16", "image_size": 32, "num_classes": 10,
                                        "representation_size": None, "classifier": "token"}}
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"schema": 1, "checkpoints": [entry]}))
    monkeypatch.setattr(hub, "MANIFEST_PATH", path)
    assert hub_command.main(["list"]) == 0
    assert capsys.readouterr().out.strip() == "mine/Tiny_8  [vit_jax; ?]"
