"""The built-in demo dataset: emoji in 9 categories (or their subcategories), 64x64 (or 32x32) on white.

    mambagen data emoji ROOT  ->  ROOT/{train,val}/<class>/<name>_<style>.png, ROOT/NOTICE, ROOT/stats.json

Sources are npm packages at pinned versions: `emoji-datasource` (metadata: category, unified code, image
file name, has_img_<style>, skin_variations ...), `emoji-datasource-{google,twitter}` (per-emoji PNGs in
img/<style>/64/) and, with --styles, Microsoft's Fluent Emoji as 3D WebPs or flat SVGs named by unified
code (the SVGs rendered by resvg). The steps are separate
functions so they can be tested without a network:

    fetch_package      npm tarball -> cache, sha512-verified (reused from the cache offline)
    unpack_packages    tarballs -> (metadata list, {style: folder of PNGs}), safe extraction
    select_emoji       metadata -> EmojiImage items (classes = categories minus "Component")
    assign_splits      items -> {group: "train" | "val"}, ~val_fraction per class, hash-seeded
    write_dataset      items + image folders -> ROOT, built beside it and renamed into place
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable

from PIL import Image

from .folder import DECODE_ERRORS, to_rgb

VERSION = "16.0.0"
META_PACKAGE = "emoji-datasource"
# art styles: npm package, pinned version, and where its images are (emoji-datasource's: img/<style>/64/ PNGs
# named as the metadata says; Fluent's: assets/<unified code>.webp (3D) or .svg (flat), matched by code)
STYLE_PACKAGES = {"google": "emoji-datasource-google", "twitter": "emoji-datasource-twitter",
                  "fluent": "@lobehub/fluent-emoji-3d", "fluent-flat": "@lobehub/fluent-emoji-flat"}
STYLE_VERSIONS = {"google": VERSION, "twitter": VERSION, "fluent": "1.1.0", "fluent-flat": "1.1.0"}
STYLES = ("google", "twitter")         # the default (the shipped demo's data); add fluent with --styles
ALL_STYLES = tuple(STYLE_PACKAGES)
CODE_NAMED = {"fluent": "package/assets/", "fluent-flat": "package/assets/"}   # images named by unified code
SVG_STYLES = ("fluent-flat",)          # vector art: rendered by resvg (the resvg-py wheel, no system library)
SVG_OVERSAMPLE = 4                     # rendered at 4x the target side, then box-averaged down (anti-aliased)
EXCLUDED_CATEGORIES = ("Component",)  # skin-tone / hair swatches, not emoji in their own right
SOURCE_SIZE = 64                       # the per-emoji PNGs live in img/<style>/64/

# The registry's dist.integrity for the pinned version: lets a cached tarball be verified offline.
# A fresh download is also checked against the registry's current answer (they must agree).
PINNED_INTEGRITY = {
    ("emoji-datasource", "16.0.0"):
        "sha512-/qHKqK5Nr3+8zhgO6kHmF43Fm5C8HNn0AaFRIpgw8HF3+uF0Vfc8jgLI1ZQS5ba1vBzksS8NBCjHejwLb2D/Sg==",
    ("emoji-datasource-google", "16.0.0"):
        "sha512-ZRexfzs7MVoLnmzZmNsO4TKhnAJp5D++Vm6PpUpH/jEQQlemp3l88CjZ+DoZ2faM9R4QxZkOPJCoT8DlPhfQ3A==",
    ("emoji-datasource-twitter", "16.0.0"):
        "sha512-7F+uCuHH+7Qnrc15P5tnbvKkg9E6tlzi4MnT2uW1RlN4pLYTza6cP/dstIfSDMtpjFLWuZewWg8jBbuL2eyELQ==",
    ("@lobehub/fluent-emoji-3d", "1.1.0"):
        "sha512-Wlq2lVStTnr8BDpIJ0pEnTKO4LuDxxqTEhTvRtD1DLRF0me7ogeRQjKoehDHXuVJ2Qaecgl5wRBv60lUAG3h7g==",
    ("@lobehub/fluent-emoji-flat", "1.1.0"):
        "sha512-lPYCg8+N56MIj+iOgeBeH6AF0tneXxJCvgi41rOTjAWpA5rU2WUcmU1fiIXouEe8GrSTarWCYLY2ML+rdLRHsg==",
}
# Used only when the `npm` client is not installed (normally `npm pack` / `npm view` do the fetching).
NPM_REGISTRY = "https://registry.npmjs.org"

ACCEPTED_MODES = ("RGBA", "RGB", "LA", "L", "P", "PA", "1")  # anything else is an odd file, skipped
STATS_MARKER = "mambagen data emoji"

LICENSES = {
    "google": "Noto Emoji by Google: Apache License 2.0 (https://www.apache.org/licenses/LICENSE-2.0), "
              "https://github.com/googlefonts/noto-emoji",
    "twitter": "Twemoji by Twitter: Copyright 2020 Twitter, Inc and other contributors, graphics licensed "
               "under CC-BY 4.0: https://creativecommons.org/licenses/by/4.0/",
    "fluent": "Fluent Emoji (3D) by Microsoft: MIT License, https://github.com/microsoft/fluentui-emoji "
              "(repackaged on npm as @lobehub/fluent-emoji-3d)",
    "fluent-flat": "Fluent Emoji (Flat) by Microsoft: MIT License, https://github.com/microsoft/fluentui-emoji "
                   "(repackaged on npm as @lobehub/fluent-emoji-flat)",
}


def default_cache_dir() -> Path:
    """~/.cache/mambagen/npm (or $XDG_CACHE_HOME/mambagen/npm)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "mambagen" / "npm"


# ------------------------------------------------------------------------------------ integrity
def integrity_of(data: bytes | str | os.PathLike) -> str:
    """Subresource-integrity string `sha512-<base64>` of some bytes or of a file's contents."""
    h = hashlib.sha512()
    if isinstance(data, bytes):
        h.update(data)
    else:
        with open(data, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return "sha512-" + base64.b64encode(h.digest()).decode()


def check_integrity(data: bytes | str | os.PathLike, integrity: str, what: str | None = None) -> None:
    """Raise ValueError unless `data` (bytes or a file) matches the npm `dist.integrity` value.

    `integrity` may list several space-separated hashes (SRI); any sha512 one must match, and at
    least one sha512 must be present (sha1 alone is too weak to trust).
    """
    what = what or (str(data) if not isinstance(data, bytes) else "data")
    wanted = [t for t in integrity.split() if t.startswith("sha512-")]
    if not wanted:
        raise ValueError(f"{what}: no sha512 hash in the integrity value {integrity!r}")
    got = integrity_of(data)
    if got not in wanted:
        raise ValueError(f"{what}: sha512 mismatch - expected {wanted[0]}, got {got}; the file is corrupt, "
                         f"truncated or not the published package (delete it and fetch again)")


# ------------------------------------------------------------------------------------ fetching
def fetch_package(name: str, version: str = VERSION, cache_dir: str | os.PathLike | None = None,
                  integrity: str | None = None, progress: bool = True) -> Path:
    """Path of the verified tarball `<cache_dir>/<name>-<version>.tgz`, fetched if needed.

    A cached tarball is reused without any network access when it matches the expected
    integrity (given, pinned above, or recorded next to it when it was first verified). Otherwise
    the registry's integrity is looked up and the package fetched with `npm pack` (or plain HTTPS
    if the npm client is missing), verified, and moved into the cache.
    """
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    tgz = cache_dir / f"{name.lstrip('@').replace('/', '-')}-{version}.tgz"   # scoped names: one file
    sidecar = tgz.with_name(tgz.name + ".integrity")
    expected = integrity or PINNED_INTEGRITY.get((name, version))
    if expected is None and sidecar.exists():
        expected = sidecar.read_text().strip()
    if tgz.exists() and expected:
        try:
            check_integrity(tgz, expected)
            return tgz
        except ValueError:
            tgz.unlink()  # a torn or stale download: fetch it again below

    published = registry_integrity(name, version)
    if expected and published != expected:
        raise ValueError(f"{name}@{version}: the registry reports integrity {published} but {expected} was "
                         f"expected; refusing to use it")
    work = Path(tempfile.mkdtemp(prefix=".fetch-", dir=cache_dir))
    try:
        got = (_npm_pack(name, version, work) if shutil.which("npm")
               else _https_download(name, version, work, progress))
        check_integrity(got, published, what=f"{name}@{version} download")
        os.replace(got, tgz)
        sidecar.write_text(published + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return tgz


def registry_integrity(name: str, version: str) -> str:
    """The registry's `dist.integrity` for name@version (asks `npm view`, else the registry over HTTPS)."""
    if shutil.which("npm"):
        out = _run_npm(["view", f"{name}@{version}", "dist.integrity", "--json"], timeout=120)
        try:
            value = json.loads(out) if out.strip() else None
        except json.JSONDecodeError:
            value = out.strip().strip("'\"")
    else:
        value = _registry_document(name, version).get("dist", {}).get("integrity")
    if not isinstance(value, str) or not value.startswith("sha"):
        raise ValueError(f"{name}@{version}: the registry gave no integrity value (does this version exist?)")
    return value


def _run_npm(args: list[str], cwd: str | os.PathLike | None = None, timeout: float = 600) -> str:
    """stdout of `npm ARGS`; a failure (offline, unknown package) becomes a ValueError with npm's reason."""
    cmd = "npm " + " ".join(args)
    try:
        res = subprocess.run(["npm", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ValueError(f"`{cmd}` timed out after {timeout:.0f} s (offline, or no access to the npm registry?)"
                         ) from None
    if res.returncode != 0:
        reason = _npm_reason(res)
        hint = "" if "E404" in reason else " (offline, or no access to the npm registry?)"
        raise ValueError(f"`{cmd}` failed{hint}: {reason}")
    return res.stdout


def _npm_reason(res: subprocess.CompletedProcess) -> str:
    """The gist of a failed npm call: its error code and one-line summary, not the stack trace."""
    try:  # with --json, npm reports the error as JSON on stdout
        err = json.loads(res.stdout)["error"]
        return f"{err.get('code', 'error')}: {err.get('summary', '').strip()}"
    except (json.JSONDecodeError, KeyError, TypeError):
        pass
    lines = [ln[len("npm error"):].strip() for ln in res.stderr.splitlines() if ln.lower().startswith("npm error")]
    code = next((ln for ln in lines if ln.startswith("code ")), "")
    detail = next((ln for ln in lines if ln and not ln.startswith(("code ", "syscall ", "errno ", "at ", "{", "}"))),
                  "")
    return " - ".join(t for t in (code, detail) if t) or f"exit code {res.returncode}"


def _npm_pack(name: str, version: str, dest: Path) -> Path:
    """Download name@version's tarball into `dest` with `npm pack` (npm checks its own integrity too)."""
    out = _run_npm(["pack", f"{name}@{version}", "--json"], cwd=dest)
    try:
        filename = json.loads(out)[0]["filename"]
    except (json.JSONDecodeError, LookupError, TypeError):
        filename = f"{name}-{version}.tgz"
    path = dest / filename
    if not path.exists():
        raise ValueError(f"`npm pack {name}@{version}` reported success but wrote no {filename} in {dest}")
    return path


def _registry_document(name: str, version: str) -> dict:
    url = f"{NPM_REGISTRY}/{name}/{version}"
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            return json.loads(r.read())
    except (urllib.error.URLError, OSError, json.JSONDecodeError) as e:
        raise ValueError(f"could not read the package document of {name}@{version} (offline?): {e}") from None


def _https_download(name: str, version: str, dest: Path, progress: bool) -> Path:
    """Fallback without the npm client: stream the tarball over HTTPS with a progress bar."""
    from tqdm.auto import tqdm

    base = name.split("/")[-1]                     # a scoped package's tarball has the bare name
    url = f"{NPM_REGISTRY}/{name}/-/{base}-{version}.tgz"
    path = dest / f"{base}-{version}.tgz"
    try:
        with urllib.request.urlopen(url, timeout=60) as r, open(path, "wb") as f, \
                tqdm(total=int(r.headers.get("Content-Length") or 0) or None, unit="B", unit_scale=True,
                     desc=name, disable=not progress) as bar:
            for block in iter(lambda: r.read(1 << 20), b""):
                f.write(block)
                bar.update(len(block))
    except (urllib.error.URLError, OSError) as e:
        raise ValueError(f"could not download {name}@{version} (offline?): {e}") from None
    return path


# ------------------------------------------------------------------------------------ extraction
def _check_member(member: tarfile.TarInfo) -> None:
    """Reject archive members that could write outside the destination or are not plain files/folders."""
    name = member.name
    parts = re.split(r"[/\\]", name)
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or PurePosixPath(name).is_absolute():
        raise ValueError(f"unsafe archive member {name!r}: absolute path")
    if ".." in parts:
        raise ValueError(f"unsafe archive member {name!r}: '..' would leave the destination folder")
    if not (member.isfile() or member.isdir()):
        raise ValueError(f"unsafe archive member {name!r}: links and devices are not expected in an npm package")


def safe_extract(tar_path: str | os.PathLike, dest: str | os.PathLike, prefixes: Iterable[str] = ()) -> Path:
    """Extract the plain files/folders of a (gzipped) tar into `dest`, only those under `prefixes` if given.

    Every member is checked before anything is written: absolute paths, '..' and links raise
    ValueError naming the member, and nothing is extracted.
    """
    dest, prefixes = Path(dest), tuple(prefixes)
    try:
        tar = tarfile.open(tar_path, "r:*")
        members = tar.getmembers()  # reads the whole index, so a torn archive fails here
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise ValueError(f"{tar_path}: not a readable tar archive ({e})") from None
    with tar:
        for m in members:
            _check_member(m)
        root = dest.resolve()
        for m in members:
            if prefixes and not m.name.startswith(prefixes):
                continue
            target = dest / m.name
            if root not in (target.resolve(), *target.resolve().parents):  # e.g. a symlink already in dest
                raise ValueError(f"unsafe archive member {m.name!r}: resolves outside {dest}")
            if m.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(m) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
    return dest


def unpack_packages(tarballs: dict[str, Path], workdir: str | os.PathLike,
                    styles: Iterable[str] = STYLES) -> tuple[list[dict], dict[str, Path], str]:
    """{"meta": tgz, <style>: tgz ...} -> (emoji.json list, {style: folder of 64px PNGs}, metadata LICENSE text)."""
    workdir = Path(workdir)
    safe_extract(tarballs["meta"], workdir / "meta", prefixes=("package/emoji.json", "package/LICENSE"))
    meta_file = workdir / "meta" / "package" / "emoji.json"
    if not meta_file.exists():
        raise ValueError(f"{tarballs['meta']}: has no package/emoji.json - not the emoji-datasource package?")
    try:
        metadata = json.loads(meta_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{tarballs['meta']}: package/emoji.json is not valid JSON ({e})") from None
    if not isinstance(metadata, list):
        raise ValueError(f"{tarballs['meta']}: package/emoji.json should be a list of emoji records")
    license_file = workdir / "meta" / "package" / "LICENSE"
    license_text = license_file.read_text(encoding="utf-8", errors="replace") if license_file.exists() else ""

    image_dirs = {}
    for style in styles:
        if style in CODE_NAMED:
            image_dirs[style] = _code_named_images(tarballs[style], workdir / style, style, metadata)
            continue
        prefix = f"package/img/{style}/{SOURCE_SIZE}/"
        safe_extract(tarballs[style], workdir / style, prefixes=(prefix,))
        folder = workdir / style / prefix
        if not folder.is_dir():
            raise ValueError(f"{tarballs[style]}: has no {prefix} folder of images")
        image_dirs[style] = folder
    return metadata, image_dirs, license_text


def _code_named_images(tarball: Path, workdir: Path, style: str, metadata: list[dict]) -> Path:
    """A style whose images are named by unified code (Fluent's assets/1f600.webp): extracted, then linked
    under the metadata's image names with `has_img_<style>` set where one exists (with or without FE0F)."""
    prefix = CODE_NAMED[style]
    safe_extract(tarball, workdir, prefixes=(prefix,))
    source = workdir / prefix
    if not source.is_dir():
        raise ValueError(f"{tarball}: has no {prefix} folder of images")
    files = {p.stem.lower(): p for p in source.iterdir() if p.is_file()}
    out = workdir / "by-name"
    out.mkdir(parents=True, exist_ok=True)

    def attach(rec: dict) -> None:
        code = str(rec.get("unified", "")).lower()
        found = files.get(code) or files.get(code.replace("-fe0f", "")) or files.get(code + "-fe0f")
        rec[f"has_img_{style}"] = found is not None and "image" in rec
        if rec[f"has_img_{style}"]:
            target = out / rec["image"]
            if not target.exists():
                os.link(found, target) if found.stat().st_dev == out.stat().st_dev else shutil.copy(found, target)

    for rec in metadata:
        if isinstance(rec, dict):
            attach(rec)
            for variant in (rec.get("skin_variations") or {}).values():
                if isinstance(variant, dict):
                    attach(variant)
    return out


# ------------------------------------------------------------------------------------ selection
@dataclass(frozen=True)
class EmojiImage:
    """One emoji (or one skin-tone variant) to write, in every style that has an image of it."""
    key: str                    # file stem: <short name>_<unified code>, unique
    group: str                  # unified code of the base emoji: variants share it
    category: str               # its class label: "Smileys & Emotion", or "Animals & Nature / animal-mammal"
    class_name: str             # folder name, e.g. "smileys_and_emotion"
    image: str                  # PNG file name inside each style's image folder
    styles: tuple[str, ...]     # selected styles whose metadata says an image exists
    sort_order: int = 0
    obsoleted_by: str | None = None  # unified code of the emoji that replaced this one


def class_folder_name(category: str) -> str:
    """Filesystem-safe class folder: "Smileys & Emotion" -> "smileys_and_emotion"."""
    name = re.sub(r"[^a-z0-9]+", "_", category.lower().replace("&", " and ")).strip("_")
    if not name:
        raise ValueError(f"category {category!r} gives an empty folder name")
    return name


def _safe_stem(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "emoji"


LEVELS = ("category", "subcategory")


def class_of(rec: dict, level: str, small: set[str]) -> tuple[str, str]:
    """(class folder, label) of one metadata record at `level`: the category ("Smileys & Emotion"), or the
    subcategory ("face-smiling"; one with fewer emoji than the minimum joins its category's "other")."""
    if level == "category":
        return class_folder_name(rec["category"]), rec["category"]
    sub = rec.get("subcategory") or "other"
    if sub in small or sub == "other":
        return class_folder_name(rec["category"]) + "_other", f"{rec['category']} / other"
    return class_folder_name(sub), f"{rec['category']} / {sub}"


def check_selection(level: str, drop_other: bool) -> None:
    """The class level and --no-other, checked once: by `select_emoji`, and by `build_emoji_dataset`
    before anything is downloaded."""
    if level not in LEVELS:
        raise ValueError(f"class level {level!r}: choose {' or '.join(LEVELS)}")
    if drop_other and level != "subcategory":
        raise ValueError("--no-other drops the pooled <category>_other classes: it needs --level subcategory")


def select_emoji(metadata: list[dict], styles: Iterable[str] = STYLES, include_variations: bool = False,
                 exclude_categories: Iterable[str] = EXCLUDED_CATEGORIES, level: str = "category",
                 min_emoji: int = 0, drop_other: bool = False) -> tuple[list[EmojiImage], list[dict]]:
    """emoji.json records -> (items sorted by class then emoji order, [{"emoji", "reason"}] left out).

    Classes are the categories, or with level="subcategory" the finer subcategories (mammals, fruit, country
    flags, ...), those with fewer than `min_emoji` base emoji merged into their category's "other" - or,
    with `drop_other`, left out (reported), so that every class is one subcategory a person can name.
    Base emoji only unless `include_variations` (skin tones, grouped with their base emoji).
    An emoji is kept with the styles that have an image; with none it is left out and reported.
    """
    check_selection(level, drop_other)
    styles, excluded = tuple(styles), set(exclude_categories)
    per_sub = _counts(r.get("subcategory") or "other" for r in metadata
                      if isinstance(r, dict) and r.get("category") not in excluded)
    small = {sub for sub, n in per_sub.items() if n < min_emoji}
    items, left_out = [], []
    for rec in metadata:
        try:
            unified, category, image = rec["unified"], rec["category"], rec["image"]
            short = rec.get("short_name") or unified
        except (KeyError, TypeError):
            left_out.append({"emoji": str(rec)[:80], "reason": "metadata record lacks unified/category/image"})
            continue
        if category in excluded:
            continue
        variants = [(unified, image, rec)]
        if include_variations:
            variants += [(v["unified"], v["image"], v) for _, v in sorted((rec.get("skin_variations") or {}).items())
                         if isinstance(v, dict) and "unified" in v and "image" in v]
        for code, img, source in variants:
            have = tuple(s for s in styles if source.get(f"has_img_{s}", False))
            key = f"{_safe_stem(short)}_{code.lower()}"
            if not have:
                left_out.append({"emoji": key, "reason": f"no image in styles {','.join(styles)}"})
                continue
            class_name, label = class_of(rec, level, small)
            if drop_other and class_name.endswith("_other"):
                left_out.append({"emoji": key, "reason": f"in the pooled class {class_name} (dropped)"})
                continue
            items.append(EmojiImage(key=key, group=unified, category=label,
                                    class_name=class_name, image=img, styles=have,
                                    sort_order=int(rec.get("sort_order") or 0),
                                    obsoleted_by=rec.get("obsoleted_by") if code == unified else None))
    items.sort(key=lambda it: (it.class_name, it.sort_order, it.key))
    dupes = [k for k, n in _counts(it.key for it in items).items() if n > 1]
    if dupes:
        raise ValueError(f"emoji metadata has duplicate unified codes: {sorted(dupes)[:5]}")
    return items, left_out


def _counts(keys: Iterable[str]) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for k in keys:
        out[k] += 1
    return out


# ------------------------------------------------------------------------------------ split
def _rank(code: str) -> str:
    """Order of a group within its class: a hash of its code, so it is fixed and looks random."""
    return hashlib.sha256(f"mambagen-emoji-split/{code}".encode()).hexdigest()


def val_count(n: int, val_fraction: float) -> int:
    """Validation items wanted out of n in one class: round(n * fraction), at least 1, leaving 1 to train."""
    if val_fraction <= 0 or n < 2:
        return 0
    return min(n - 1, max(1, round(n * val_fraction)))


def assign_splits(items: list[EmojiImage], val_fraction: float = 0.1,
                  links: Iterable[tuple[str, str]] = ()) -> dict[str, str]:
    """{group code: "train" | "val"}: about `val_fraction` of each class's items go to validation.

    A group is one base emoji with all its styles and variants; `links` (pairs of group codes)
    merge groups that must share a side - an obsoleted emoji and its successor, identical
    images. Groups are ranked by a hash of their smallest code, so the split does not depend on
    the order of the metadata and never changes between runs.
    """
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    groups = {it.group for it in items}
    parent = {g: g for g in groups}

    def find(g):
        while parent[g] != g:
            parent[g] = parent[parent[g]]
            g = parent[g]
        return g

    for a, b in [*links, *((it.group, it.obsoleted_by) for it in items if it.obsoleted_by)]:
        if a in parent and b in parent:
            ra, rb = find(a), find(b)
            parent[max(ra, rb)] = min(ra, rb)  # the smallest code names the merged group

    class_of, size = {}, defaultdict(int)
    for it in sorted(items, key=lambda it: it.group):
        class_of.setdefault(find(it.group), it.class_name)  # a merged group lives in its root's class
        size[find(it.group)] += 1
    per_class: dict[str, list[str]] = defaultdict(list)
    for root, cls in class_of.items():
        per_class[cls].append(root)

    side = {}
    for roots in per_class.values():
        # walk the groups in hash order, moving whole groups to val until it holds ~fraction of the items
        target, taken = val_count(sum(size[r] for r in roots), val_fraction), 0
        for k, r in enumerate(sorted(roots, key=_rank)):
            to_val = taken < target and k < len(roots) - 1
            side[r] = "val" if to_val else "train"
            taken += size[r] if to_val else 0
    return {g: side[find(g)] for g in groups}


def duplicate_links(items: list[EmojiImage], image_dirs: dict[str, Path]) -> list[tuple[str, str]]:
    """Pairs of groups with byte-identical source images in some style (e.g. flags shared by territories)."""
    links, seen = [], {}
    for it in items:
        for style in it.styles:
            path = Path(image_dirs[style]) / it.image
            try:
                digest = (style, hashlib.sha1(path.read_bytes()).hexdigest())
            except OSError:
                continue  # reported when the image is written
            if digest in seen and seen[digest] != it.group:
                links.append((seen[digest], it.group))
            seen.setdefault(digest, it.group)
    return links


# ------------------------------------------------------------------------------------ images
class OddImage(ValueError):
    """A source image that is unreadable or not what an emoji PNG should be; it is skipped."""


def svg_renderer():
    """resvg's Python wheel, or a ValueError that says how to install it (asked before any download)."""
    try:
        import resvg_py
    except ImportError:
        raise ValueError("the fluent-flat style is vector art and needs an SVG renderer: "
                         "pip install 'mambagen[svg]' (the resvg-py wheel; no system library)") from None
    return resvg_py


def _is_svg(path: str | os.PathLike) -> bool:
    with open(path, "rb") as f:
        head = f.read(1024).lstrip()
    return head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in head)


def _render_svg(path: str | os.PathLike, size: int) -> Image.Image:
    """An SVG emoji rendered at SVG_OVERSAMPLE x `size` wide (aspect kept), transparent; raises OddImage."""
    renderer = svg_renderer()
    try:
        png = renderer.svg_to_bytes(svg_path=str(path), width=SVG_OVERSAMPLE * size, skip_system_fonts=True)
    except ValueError as e:   # resvg's answer to a file it cannot parse or draw
        raise OddImage(f"unreadable SVG: {str(e).strip() or type(e).__name__}") from None
    return Image.open(io.BytesIO(bytes(png)))


def prepare_emoji_image(path: str | os.PathLike, size: int) -> Image.Image:
    """Emoji PNG / WebP / SVG -> RGB size x size, composited on white, centred (aspect kept); raises OddImage."""
    try:
        if os.path.getsize(path) == 0:
            raise OddImage("empty file (0 bytes)")
        with (_render_svg(path, size) if _is_svg(path) else Image.open(path)) as img:
            img.load()
            if img.mode not in ACCEPTED_MODES:
                raise OddImage(f"unexpected mode {img.mode}")
            if img.width == 0 or img.height == 0:
                raise OddImage(f"zero-size image ({img.width}x{img.height})")
            if img.convert("RGBA").getchannel("A").getextrema()[1] == 0:
                raise OddImage("fully transparent (blank) image")
            rgb = to_rgb(img)
    except FileNotFoundError:
        raise OddImage("file missing in the package") from None
    except OddImage:
        raise
    except DECODE_ERRORS as e:
        raise OddImage(f"unreadable: {str(e).strip() or type(e).__name__}") from None
    return _fit_on_white(rgb, size)


def _fit_on_white(img: Image.Image, size: int) -> Image.Image:
    """Scale the longer side to `size` and centre on a white square (emoji are never cropped)."""
    w, h = img.size
    if (w, h) != (size, size):
        scale = size / max(w, h)
        new = (max(1, round(w * scale)), max(1, round(h * scale)))
        if w % new[0] == 0 and h % new[1] == 0 and w // new[0] == h // new[1] and new[0] < w:
            img = img.reduce(w // new[0])  # exact box average (64 -> 32): no ringing on the white edge
        else:
            img = img.resize(new, Image.LANCZOS if new[0] < w else Image.BICUBIC)
    canvas = Image.new("RGB", (size, size), (255, 255, 255))
    canvas.paste(img, ((size - img.width) // 2, (size - img.height) // 2))
    return canvas


# ------------------------------------------------------------------------------------ writing
def _check_target(root: Path, force: bool) -> None:
    """Refuse to replace a non-empty ROOT unless --force, and never one this command did not build."""
    if not root.exists():
        return
    if not root.is_dir():
        raise ValueError(f"{root}: exists and is not a folder")
    if not any(root.iterdir()):
        return
    if not force:
        raise ValueError(f"{root}: folder is not empty; pass --force to replace it")
    try:
        built_by_us = json.loads((root / "stats.json").read_text()).get("built_by") == STATS_MARKER
    except (OSError, ValueError, AttributeError):
        built_by_us = False
    if not built_by_us:
        raise ValueError(f"{root}: refusing to replace it even with --force: it has no stats.json from "
                         f"`{STATS_MARKER}`, so it may hold something else; remove it yourself")


def _swap_into_place(tmp: Path, root: Path) -> None:
    """Rename the finished build onto ROOT; an old ROOT is moved aside first and deleted last."""
    old = None
    if root.exists():
        if any(root.iterdir()):
            old = root.with_name(f".{root.name}.old-{os.getpid()}")
            os.replace(root, old)
        else:
            root.rmdir()
    os.replace(tmp, root)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def notice_text(styles: Iterable[str], packages: dict | None = None, metadata_license: str = "") -> str:
    """The ROOT/NOTICE file: where the images come from and under which licenses."""
    lines = ["Emoji dataset built by `mambagen data emoji` for research and demos.",
             "The images keep their original licenses. Changes made: composited on a white background,",
             "resized, renamed and sorted into class folders.", "", "Images:"]
    lines += [f"  <name>_{s}.png  {LICENSES[s]}" for s in styles]
    lines += ["", "Metadata (categories, names): emoji-datasource by Cal Henderson (Iamcal), MIT license,",
              "  https://github.com/iamcal/emoji-data"]
    if packages:
        lines += ["", "Packages (npm):"] + [f"  {n}@{p['version']}  {p['integrity']}" for n, p in packages.items()]
    if metadata_license.strip():
        lines += ["", "emoji-datasource LICENSE:", "", metadata_license.strip()]
    return "\n".join(lines) + "\n"


def _write_images(items: list[EmojiImage], splits: dict[str, str], image_dirs: dict, out: Path, size: int,
                  progress: bool) -> tuple[dict, dict, list[dict]]:
    """Write out/<split>/<class>/<key>_<style>.png for every readable image.

    Returns (images {split: {class: {style: n}}}, emoji {split: {class: n}}, skipped [{emoji, style, file, reason}]).
    """
    from tqdm.auto import tqdm

    styles = sorted({s for it in items for s in it.styles})
    classes = sorted({it.class_name for it in items})
    images = {sp: {c: {s: 0 for s in styles} for c in classes} for sp in ("train", "val")}
    emoji = {sp: {c: 0 for c in classes} for sp in ("train", "val")}
    skipped = []
    for it in tqdm(items, desc="writing emoji", unit="emoji", disable=not progress):
        split, wrote = splits[it.group], False
        for style in it.styles:
            try:
                img = prepare_emoji_image(Path(image_dirs[style]) / it.image, size)
            except OddImage as e:
                skipped.append({"emoji": it.key, "style": style, "file": it.image, "reason": str(e)})
                continue
            path = out / split / it.class_name / f"{it.key}_{style}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            img.save(path, format="PNG")
            images[split][it.class_name][style] += 1
            wrote = True
        emoji[split][it.class_name] += wrote
    return images, emoji, skipped


def write_dataset(items: list[EmojiImage], image_dirs: dict[str, str | os.PathLike], root: str | os.PathLike, *,
                  size: int = 64, val_fraction: float = 0.1, force: bool = False, packages: dict | None = None,
                  metadata_license: str = "", left_out: Iterable[dict] = (), progress: bool = True) -> dict:
    """Write ROOT/{train,val}/<class>/<key>_<style>.png, NOTICE and stats.json; return the stats.

    The tree is built in a hidden folder beside ROOT and renamed onto it at the end, so ROOT is
    either the old dataset or the complete new one. Unreadable/odd images are skipped and listed.
    """
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    root = Path(root)
    _check_target(root, force)
    image_dirs = {s: Path(d) for s, d in image_dirs.items()}
    splits = assign_splits(items, val_fraction, links=duplicate_links(items, image_dirs))
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.building-", dir=root.parent))
    try:
        images, emoji, skipped = _write_images(items, splits, image_dirs, tmp, size, progress)
        totals = {sp: sum(n for c in images[sp].values() for n in c.values()) for sp in images}
        if not sum(totals.values()):
            raise ValueError(f"no emoji image could be written (first problem: "
                             f"{skipped[0]['reason'] if skipped else 'nothing selected'})")
        styles = sorted({s for it in items for s in it.styles})
        stats = {
            "built_by": STATS_MARKER, "size": size, "val_fraction": val_fraction, "styles": styles,
            "classes": {it.class_name: it.category for it in sorted(items, key=lambda it: it.class_name)},
            "images": images, "emoji": emoji, "totals": totals,
            "skipped": skipped, "left_out": list(left_out), "packages": packages or {},
        }
        (tmp / "NOTICE").write_text(notice_text(styles, packages, metadata_license), encoding="utf-8")
        (tmp / "stats.json").write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
        _check_target(root, force)  # someone may have written there meanwhile
        _swap_into_place(tmp, root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return stats


def build_emoji_dataset(root: str | os.PathLike, size: int = 64, val_fraction: float = 0.1,
                        styles: Iterable[str] = STYLES, cache_dir: str | os.PathLike | None = None,
                        force: bool = False, include_variations: bool = False, progress: bool = True,
                        level: str = "category", min_emoji: int = 0, drop_other: bool = False) -> dict:
    """Fetch (or reuse) the packages, select, split and write the dataset at ROOT; return its stats."""
    styles = tuple(dict.fromkeys(styles))
    unknown = [s for s in styles if s not in STYLE_PACKAGES]
    if unknown or not styles:
        raise ValueError(f"unknown style(s) {unknown or '(none given)'}; choose from {', '.join(ALL_STYLES)}")
    if any(s in SVG_STYLES for s in styles):
        svg_renderer()   # before any download
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    check_selection(level, drop_other)   # before any download
    root = Path(root)
    _check_target(root, force)  # fail before any download

    names = {"meta": META_PACKAGE, **{s: STYLE_PACKAGES[s] for s in styles}}
    versions = {"meta": VERSION, **STYLE_VERSIONS}
    tarballs = {k: fetch_package(n, versions[k], cache_dir, progress=progress) for k, n in names.items()}
    packages = {n: {"version": versions[k], "integrity": integrity_of(tarballs[k])} for k, n in names.items()}
    with tempfile.TemporaryDirectory(prefix="mambagen-emoji-") as work:
        metadata, image_dirs, license_text = unpack_packages(tarballs, work, styles)
        items, left_out = select_emoji(metadata, styles, include_variations=include_variations, level=level,
                                       min_emoji=min_emoji, drop_other=drop_other)
        return write_dataset(items, image_dirs, root, size=size, val_fraction=val_fraction, force=force,
                             packages=packages, metadata_license=license_text, left_out=left_out,
                             progress=progress)


def format_summary(stats: dict) -> str:
    """A table of image counts per class, split and style (and skipped images, if any)."""
    styles, imgs = stats["styles"], stats["images"]
    cols = [(sp, s) for sp in ("train", "val") for s in styles]
    width = max(len(c) for c in stats["classes"]) + 2
    cell = max([15, *(len(f"{sp} {s}") + 2 for sp, s in cols)])   # every header keeps a gap before the next
    head = f"{'class':<{width}}" + "".join(f"{sp + ' ' + s:>{cell}}" for sp, s in cols) + f"{'emoji tr/val':>15}"
    rows = [head, "-" * len(head)]
    for c in stats["classes"]:
        cells = "".join(f"{imgs[sp][c][s]:>{cell}}" for sp, s in cols)
        emo = f"{stats['emoji']['train'][c]}/{stats['emoji']['val'][c]}"
        rows.append(f"{c:<{width}}{cells}{emo:>15}")
    total = "".join(f"{sum(imgs[sp][c][s] for c in stats['classes']):>{cell}}" for sp, s in cols)
    emo = f"{sum(stats['emoji']['train'].values())}/{sum(stats['emoji']['val'].values())}"
    rows += ["-" * len(head), f"{'total':<{width}}{total}{emo:>15}"]
    if stats["skipped"]:
        reasons = _counts(s["reason"] for s in stats["skipped"])
        rows.append(f"skipped {len(stats['skipped'])} image(s): " + "; ".join(f"{r} x{n}" for r, n in reasons.items()))
    if stats["left_out"]:
        rows.append(f"left out {len(stats['left_out'])} emoji (see stats.json)")
    return "\n".join(rows)
