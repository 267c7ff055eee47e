"""Where checkpoints come from: the manifest, plain downloads, and the Hugging Face cache.

``resolve(source)`` turns whatever a user wrote into a local path:

    an existing file or folder      -> itself
    a manifest name or file name    -> weights/<file>, downloaded once ("augreg/Ti_16-...", "ViT-B_32.npz")
    an "org/name" Hub repo          -> a snapshot folder in the Hugging Face cache (config.json + weights)

The manifest (``weights/manifest.json``) is data: one entry per checkpoint with its URLs, sha256
(null where none is published), format and model config. Downloads use only the standard library:
they resume from a ``.part`` file, check the sha256, and appear under their final name only when
complete. ``HF_HUB_OFFLINE=1`` (or ``offline=True``) turns every network access into an error that
says which URL to fetch by hand and where to put the file.

Example:
    >>> from minivit.checkpoints import hub
    >>> "augreg/Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0" in hub.list_checkpoints()
    True
    >>> hub.manifest_entry("vit-b_16-224.npz")["config"]["image_size"]
    224

Command line (minivit/commands/hub.py): ``python -m minivit.hub list`` and ``python -m minivit.hub download NAME``.
"""

from __future__ import annotations

import difflib
import hashlib
import http.client
import json
import logging
import os
import re
import urllib.error
import urllib.request
from pathlib import Path

from ..common.console import bar
from ..common.errors import DownloadError
from ..common.files import ensure_folder, hash_file
from .reading import looks_like_html

log = logging.getLogger(__name__)

# weights/ sits at the repository root, beside the package (see weights/README.md).
REPO_ROOT = Path(__file__).resolve().parents[2]
MANIFEST_PATH = REPO_ROOT / "weights" / "manifest.json"
# Outside a checkout (a non-editable install) there is no weights/ beside the package: use a user cache.
DEFAULT_WEIGHTS_DIR = (REPO_ROOT / "weights" if (REPO_ROOT / "weights").is_dir()
                       else Path("~/.cache/minivit/weights").expanduser())
WEIGHTS_DIR_ENV = "MINIVIT_WEIGHTS_DIR"

FORMATS = ("vit_jax", "big_vision", "transformers", "minivit")
# The model minivit ships, in weights/ beside the manifest (weights/README.md is its model card): what
# `minivit predict`, `minivit.Predictor()` and the other commands use when no checkpoint is named.
SHIPPED_MODEL = "minivit-fer"
# Hub files we need: the config and the weights, safetensors first; pickled .bin only as a fallback.
HF_PATTERNS = ["config.json", "*.safetensors", "*.safetensors.index.json"]
HF_FALLBACK_PATTERNS = ["config.json", "pytorch_model.bin"]
CHUNK = 1 << 20  # 1 MiB reads: few syscalls, a smooth progress bar
_TRUE = {"1", "true", "yes", "on"}
# "org/name" as the Hub spells repo ids; file suffixes mean the user meant a local file.
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_FILE_SUFFIXES = (".npz", ".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".json")

_manifest_cache: dict[Path, list[dict]] = {}


# ----------------------------------------------------------------------------- manifest

def load_manifest(path: str | Path | None = None) -> list[dict]:
    """The manifest's checkpoint entries (a list of dicts), read once per path.

    >>> entry = load_manifest()[0]
    >>> sorted(k for k in ("name", "format", "urls", "sha256", "config") if k in entry)
    ['config', 'format', 'name', 'sha256', 'urls']
    """
    path = Path(path or MANIFEST_PATH)
    if path not in _manifest_cache:
        try:
            _manifest_cache[path] = json.loads(path.read_text())["checkpoints"]
        except FileNotFoundError:
            raise DownloadError(f"{path}: checkpoint manifest not found (is minivit installed with `pip install -e .`?)") from None
        except (ValueError, KeyError, TypeError) as e:
            raise DownloadError(f"{path}: not a valid checkpoint manifest ({e})") from None
    return _manifest_cache[path]


def list_checkpoints() -> list[str]:
    """Names of all checkpoints in the manifest, in manifest order.

    >>> "google/vit-base-patch16-224-in21k" in list_checkpoints()
    True
    """
    return [e["name"] for e in load_manifest()]


def _aliases(entry: dict) -> list[str]:
    """Other spellings that find an entry: its local file path, the file name, and its stem."""
    if not entry.get("file"):
        return []
    file = entry["file"]
    base = file.rsplit("/", 1)[-1]
    return [file, base, base.rsplit(".", 1)[0]]


def manifest_entry(name: str) -> dict | None:
    """The manifest entry called ``name`` (case-insensitive; file names work too), or None.

    An entry's explicit ``aliases`` win ("ViT-B_16" is the ImageNet-21k original); any other
    file name that two entries share raises DownloadError listing both full names.

    >>> manifest_entry("AUGREG/Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0")["config"]["preset"]
    'Ti/16'
    """
    key = name.strip().lower()
    entries = load_manifest()
    for e in entries:
        if e["name"].lower() == key or key in (a.lower() for a in e.get("aliases", [])):
            return e
    hits = [e for e in entries if key in (a.lower() for a in _aliases(e))]
    if len(hits) > 1:
        names = ", ".join(e["name"] for e in hits)
        raise DownloadError(f"checkpoint name {name!r} is ambiguous: it matches {names}; use the full name")
    return hits[0] if hits else None


def checkpoint_config(name: str, **overrides):
    """The ViTConfig a manifest checkpoint needs (preset + the entry's fields + overrides).

    >>> checkpoint_config("imagenet21k/ViT-B_16").representation_size
    768
    """
    from ..model.config import config_from_name  # lazy: the hub has no need of torch-side modules

    entry = manifest_entry(name)
    if entry is None:
        raise DownloadError(_unknown_message(name))
    fields = {k: v for k, v in entry["config"].items() if k != "preset"}
    fields.update(overrides)
    return config_from_name(entry["config"]["preset"], **fields)


def _close_names(source: str) -> str:
    """Up to three manifest names that look like source, comma-separated ('' if none)."""
    # Match against names and file stems alike ("ViT-B_61" is close to the stem "ViT-B_16").
    spellings = {}
    for e in load_manifest():
        for s in [e["name"], *_aliases(e)]:
            spellings.setdefault(s.lower(), e["name"])
    close = difflib.get_close_matches(source.strip().lower(), list(spellings), n=6, cutoff=0.6)
    return ", ".join(list(dict.fromkeys(spellings[c] for c in close))[:3])  # dedupe, keep order


def source_problem(source: str) -> str | None:
    """Why ``source`` can name no checkpoint, as ``resolve`` would say it, found without fetching anything:
    it is no existing path, no manifest name and no 'org/name' repo id. None when it may resolve.

    >>> source_problem("runs/nope.safetensors"), source_problem("google/vit-base-patch16-224")
    ('runs/nope.safetensors: no such file or folder', None)
    """
    if Path(source).expanduser().exists() or manifest_entry(source) is not None or could_be_repo_id(source):
        return None
    return _not_found(source)


def _not_found(source: str) -> str:
    """The line for a source that is no path, no manifest name and no repo id."""
    return f"{source}: no such file or folder" if looks_like_a_path(source) else _unknown_message(source)


def _unknown_message(source: str) -> str:
    close = _close_names(source)
    hint = f"; did you mean {close}?" if close else ""
    return (f"unknown checkpoint {source!r}: not an existing path, not in {MANIFEST_PATH} "
            f"(see `python -m minivit.hub list`) and not an 'org/name' Hugging Face repo{hint}")


# ----------------------------------------------------------------------------- resolve

_shipped_digests: dict[tuple, str] = {}  # (path, size, mtime) -> sha256 of the shipped files checked so far


def shipped_file(entry: dict) -> Path:
    """The file of a model shipped in the repository's weights/ folder (``"shipped": true``), checked against
    its manifest sha256: nothing to download, and a damaged or missing file says so in one line.

    >>> shipped_file(manifest_entry(SHIPPED_MODEL)).name
    'minivit-fer.safetensors'
    """
    path = MANIFEST_PATH.parent / entry["file"]
    if not path.is_file():
        raise DownloadError(f"{path}: the model shipped with minivit is missing from this checkout "
                            f"(restore it with `git checkout -- {path.relative_to(REPO_ROOT)}`)")
    stat = path.stat()
    key = (path, stat.st_size, stat.st_mtime_ns)  # hashed once per process and file version: a server loads it often
    digest = _shipped_digests.get(key) or hash_file(path).hexdigest()
    if digest != entry["sha256"]:
        raise DownloadError(f"{path}: sha256 {digest[:12]}... is not the manifest's {entry['sha256'][:12]}...: the "
                            f"file is damaged or was replaced (restore it with `git checkout -- "
                            f"{path.relative_to(REPO_ROOT)}`)")
    _shipped_digests[key] = digest
    return path


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def get_weights_dir(weights_dir: str | Path | None = None) -> Path:
    """Where manifest downloads go: the argument, else $MINIVIT_WEIGHTS_DIR, else <repo>/weights."""
    chosen = weights_dir or os.environ.get(WEIGHTS_DIR_ENV) or DEFAULT_WEIGHTS_DIR
    return Path(chosen).expanduser()


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment now (huggingface_hub reads it at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "huggingface"
    return Path(home).expanduser() / "hub"


def resolve(source: str | os.PathLike, *, weights_dir: str | Path | None = None,
            offline: bool | None = None) -> Path:
    """A local path for a checkpoint: a file, a manifest name, or a Hugging Face repo id.

    offline=None follows HF_HUB_OFFLINE; offline=True never touches the network and says what
    to fetch by hand when the file is not there yet.

    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "my.npz"; _ = f.write_bytes(b"x")
    >>> resolve(f) == f
    True
    """
    source = os.fspath(source)
    path = Path(source).expanduser()
    if path.exists():
        return path
    offline = _env_true("HF_HUB_OFFLINE") if offline is None else offline

    entry = manifest_entry(source)
    if entry is not None and entry.get("shipped"):
        return shipped_file(entry)
    if entry is not None and entry["format"] == "transformers":
        return hf_snapshot(entry["repo"], offline=offline)
    if entry is not None:
        dest = get_weights_dir(weights_dir) / entry["file"]
        if dest.exists():
            return dest
        url = entry["urls"][0]
        if offline:
            raise DownloadError(f"{entry['name']} is not downloaded yet and offline mode is on: "
                                f"fetch {url} and save it as {dest}")
        # Try each mirror; report the first URL's failure if all fail (it is the canonical one).
        errors = []
        for url in entry["urls"]:
            try:
                return download(url, dest, sha256=entry.get("sha256"))
            except DownloadError as e:
                errors.append(e)
        raise errors[0]

    if could_be_repo_id(source):
        try:
            return hf_snapshot(source, offline=offline)
        except DownloadError as e:
            # "org/name" may also be a mistyped manifest name ("imagenet21k/ViT-B_61"): say so.
            hint = _close_names(source)
            raise DownloadError(f"{source}: no such file or folder, and not available as a Hugging Face repo ({e})"
                                + (f"; or did you mean the manifest's {hint}?" if hint else "")) from e.__cause__
    raise DownloadError(_not_found(source))


def looks_like_a_path(source: str) -> bool:
    """A string meant as a local path: a file suffix, a path separator, ./ ~ or an existing parent folder.

    >>> looks_like_a_path("runs/nope"), looks_like_a_path("weights.npz"), looks_like_a_path("ViT-B_16")
    (True, True, False)
    """
    has_separator = "/" in source or os.sep in source
    parent = Path(source).expanduser().parent
    return (source.lower().endswith(_FILE_SUFFIXES) or has_separator or source.startswith((".", "~"))
            or (parent != Path(".") and parent.is_dir()))


def could_be_repo_id(source: str) -> bool:
    """``owner/name`` as the Hub spells repo ids, with no file suffix and no local folder ``owner``.

    >>> could_be_repo_id("google/vit-base-patch16-224"), could_be_repo_id("weights/x.npz")
    (True, False)
    """
    return (bool(_REPO_ID.match(source)) and not source.lower().endswith(_FILE_SUFFIXES)
            and not Path(source).parent.is_dir())


# ----------------------------------------------------------------------------- Hugging Face

def hf_snapshot(repo_id: str, *, revision: str | None = None, cache_dir: str | Path | None = None,
                offline: bool | None = None) -> Path:
    """The snapshot folder of a Hub repo (config.json + weights), downloaded into the HF cache if needed.

    Safetensors files are fetched when the repo has them; pytorch_model.bin only when it has none.
    """
    from huggingface_hub import snapshot_download  # lazy: importing it costs ~0.5 s

    cache_dir = Path(cache_dir) if cache_dir else hf_cache_dir()
    offline = _env_true("HF_HUB_OFFLINE") if offline is None else offline
    kwargs = dict(repo_id=repo_id, revision=revision, cache_dir=str(cache_dir), local_files_only=offline)
    try:
        folder = Path(snapshot_download(allow_patterns=HF_PATTERNS, **kwargs))
        if not any(folder.glob("*.safetensors")):
            folder = Path(snapshot_download(allow_patterns=HF_FALLBACK_PATTERNS, **kwargs))
    except Exception as e:  # huggingface_hub's error classes move between versions; all mean "not available"
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        if offline:
            raise DownloadError(f"{repo_id} is not in the Hugging Face cache {cache_dir} and offline mode is on: "
                                f"run `python -m minivit.hub download {repo_id}` with network access "
                                f"(same HF_HOME/HF_HUB_CACHE), then retry") from e
        raise DownloadError(f"could not fetch Hugging Face repo {repo_id} into {cache_dir}: {reason}") from e
    if not (folder / "config.json").exists():
        raise DownloadError(f"{folder}: Hugging Face repo {repo_id} has no config.json")
    if not any(folder.glob("*.safetensors")) and not (folder / "pytorch_model.bin").exists():
        raise DownloadError(f"{folder}: Hugging Face repo {repo_id} has no *.safetensors or pytorch_model.bin")
    return folder


# ----------------------------------------------------------------------------- download

def download(url: str, dest: str | Path, *, sha256: str | None = None, progress: bool = True,
             timeout: float = 30.0) -> Path:
    """Fetch url to dest (resumable, checksummed, atomic) and return dest.

    Bytes go to ``dest.part`` first; a later call resumes it with an HTTP Range request. The file
    appears under its final name only once complete and, when sha256 is given, verified.

    >>> import tempfile, pathlib
    >>> src = pathlib.Path(tempfile.mkdtemp()) / "a.bin"; _ = src.write_bytes(b"weights")
    >>> download(src.as_uri(), src.with_name("b.bin"), progress=False).read_bytes()
    b'weights'
    """
    dest = Path(dest)
    ensure_folder(dest.parent, dest)
    part = dest.with_name(dest.name + ".part")
    by_hand = f"fetch {url} and save it as {dest}"

    done = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "minivit", "Accept-Encoding": "identity"}
    if done:
        headers["Range"] = f"bytes={done}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and done:
            # Range past the end: the .part may already be whole, or the remote file changed.
            total = (e.headers.get("Content-Range") or "").rpartition("/")[2]
            e.close()
            if total.isascii() and total.isdecimal() and int(total) == done:  # not isdigit(): "²"
                return _finish(part, dest, url, sha256, hash_file(part))
            part.unlink()
            return download(url, dest, sha256=sha256, progress=progress, timeout=timeout)
        e.close()
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}; check the URL, or {by_hand}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise DownloadError(f"could not reach {url} ({reason}); {by_hand}") from None

    with resp:
        status = getattr(resp, "status", 200)
        if status != 206:
            done = 0  # the server ignored our Range (or there was none): start over
        ctype = (resp.headers.get("Content-Type") or "").lower()
        if "text/html" in ctype:
            raise DownloadError(f"{url} returned an HTML page, not a checkpoint (login/quota/error page?); {by_hand}")
        length = resp.headers.get("Content-Length")
        total = done + int(length) if length and length.isascii() and length.isdecimal() else None

        digest = hash_file(part) if done else hashlib.sha256()
        shown = bar(total=total, initial=done, unit="B", unit_scale=True, unit_divisor=1024,
                    desc=dest.name, show=progress, leave=False)
        try:
            written = _stream(resp, url, part, done, digest, shown, by_hand)
        finally:
            shown.close()
    if total is not None and written != total:
        raise DownloadError(f"download of {url} stopped at {written} of {total} bytes; "
                            f"run again to resume from {part}, or {by_hand}")
    return _finish(part, dest, url, sha256, digest)


def _stream(resp, url: str, part: Path, done: int, digest, shown, by_hand: str) -> int:
    """Append the response's bytes to ``part`` (anew unless it holds ``done`` bytes already), hashing them
    as they come; returns the bytes ``part`` holds. A first chunk that is an HTML page is refused and
    deleted; a connection that drops mid-way keeps the .part, so that the next call resumes it."""
    written = done
    try:
        with open(part, "ab" if done else "wb") as f:
            first = not done
            while chunk := resp.read(CHUNK):
                if first and looks_like_html(chunk[:512]):
                    f.close()
                    part.unlink()
                    raise DownloadError(f"{url} returned an HTML page, not a checkpoint; {by_hand}")
                first = False
                f.write(chunk)
                digest.update(chunk)
                written += len(chunk)
                shown.update(len(chunk))
    except (OSError, http.client.HTTPException) as e:
        raise DownloadError(f"download of {url} broke off after {written} bytes ({e}); "
                            f"run again to resume from {part}, or {by_hand}") from None
    return written


def _finish(part: Path, dest: Path, url: str, sha256: str | None, digest) -> Path:
    got = digest.hexdigest()
    if sha256 and got != sha256.lower():
        part.unlink()
        raise DownloadError(f"{dest.name}: sha256 mismatch for {url}: expected {sha256.lower()}, got {got}; "
                            f"deleted the download, run again to re-fetch it")
    log.info("downloaded %s (sha256 %s)", dest, got)
    os.replace(part, dest)  # atomic: dest is either absent or complete
    return dest
