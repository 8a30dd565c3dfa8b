"""Image folder reader (bad files skipped, white compositing, deterministic flips) and the emoji builder
(selection, grouped split, atomic writing, integrity, safe extraction) - all offline, on tiny synthetic data."""
import base64
import io
import json
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from mambagen.data import emoji as E
from mambagen.data.folder import ImageFolder, flip_decision, load_image, pil_to_tensor, tensor_to_pil


# ------------------------------------------------------------------------------------ ImageFolder
def _noise(w, h, seed, mode="RGB"):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, len(mode)), dtype=np.uint8), mode)


def _half_red_half_blue(size=16):
    """Left half red, right half blue: a flip is visible in every row."""
    arr = np.zeros((size, size, 3), np.uint8)
    arr[:, : size // 2, 0] = 255
    arr[:, size // 2:, 2] = 255
    return Image.fromarray(arr)


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "imgs"
    (root / "a").mkdir(parents=True)
    (root / "b" / "nested").mkdir(parents=True)
    (root / ".hidden").mkdir()
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., 0] = 200                       # red where opaque
    rgba[4:, :, 3] = 255                     # top 4 rows fully transparent (and black underneath)
    Image.fromarray(rgba, "RGBA").save(root / "a" / "0_rgba.png")
    _noise(32, 20, 1).save(root / "a" / "1_wide.JPEG", quality=95)           # non-square, upper-case ext
    (root / "a" / "2_corrupt.png").write_bytes(b"this is not a png at all" * 10)
    buf = io.BytesIO()
    _noise(64, 64, 2).save(buf, "PNG")                                       # noise barely compresses
    (root / "a" / "3_truncated.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    _half_red_half_blue().save(root / "b" / "4_flag.png")
    _noise(16, 16, 3).save(root / "b" / "nested" / "5_deep.webp")
    (root / "b" / "notes.txt").write_text("not an image")
    return root


def test_folder_classes_samples_and_transform(folder):
    ds = ImageFolder(folder, 16)
    assert ds.classes == ["a", "b"] and len(ds) == 6
    assert [lbl for _, lbl in ds.samples] == [0, 0, 0, 0, 1, 1]
    x, label = ds[0]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and label == 0
    assert torch.all(x[:, 0, 0] == 1.0)      # transparent pixel composited on white, not black
    assert x[0, 10, 10] == pytest.approx(200 / 127.5 - 1) and x[1, 10, 10] == -1.0
    assert ds[1][0].shape == (3, 16, 16)     # 32x20 resized and centre-cropped
    assert x.min() >= -1 and x.max() <= 1


def test_bad_files_are_skipped_and_counted(folder):
    ds = ImageFolder(folder, 16)
    out = [ds[i] for i in range(len(ds))]   # never raises
    assert all(x.shape == (3, 16, 16) for x, _ in out)
    assert torch.equal(out[2][0], out[4][0]) and out[2][1] == 1   # corrupt (2) -> 3 truncated -> 4
    rep = ds.skipped_report()
    assert rep["skipped"] == 2 and rep["fallbacks"] == 2
    assert {e["path"].rsplit("/", 1)[-1] for e in rep["examples"]} == {"2_corrupt.png", "3_truncated.png"}

    rep = ImageFolder(folder, 16).scan(progress=False)
    assert rep["skipped"] == 2 and rep["dropped_by_scan"] == 2 and rep["samples"] == 4


def test_flips_are_deterministic_per_seed_and_epoch(tmp_path):
    root = tmp_path / "flags"
    (root / "c").mkdir(parents=True)
    for i in range(16):
        _half_red_half_blue().save(root / "c" / f"{i:02d}.png")

    def flips(ds):
        return [bool(ds[i][0][0, 0, 0] < 0) for i in range(len(ds))]  # red pixel moved right = flipped

    a, b = ImageFolder(root, 16, random_flip=True), ImageFolder(root, 16, random_flip=True)
    per_epoch = []
    for epoch in range(4):
        a.set_epoch(epoch), b.set_epoch(epoch)
        per_epoch.append(flips(a))
        assert per_epoch[-1] == flips(b) == [flip_decision(0, epoch, i) for i in range(16)]
    assert len({tuple(f) for f in per_epoch}) > 1 and any(any(f) for f in per_epoch)
    b.set_epoch(0, seed=1)
    assert flips(b) != per_epoch[0]           # 16 coins: equal with chance 2**-16
    assert not any(flips(ImageFolder(root, 16)))  # random_flip off


def test_folder_errors_name_the_path(tmp_path, folder):
    with pytest.raises(ValueError, match="not found"):
        ImageFolder(tmp_path / "nope", 16)
    (tmp_path / "flat").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "flat" / "x.png")
    with pytest.raises(ValueError, match="no class sub-folders"):
        ImageFolder(tmp_path / "flat", 16)
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(ValueError, match="no images"):
        ImageFolder(tmp_path / "empty", 16)
    with pytest.raises(ValueError, match="2_corrupt.png"):
        load_image(folder / "a" / "2_corrupt.png", 16)
    assert load_image(folder / "b" / "4_flag.png", 8).shape == (3, 8, 8)


def test_tensor_pil_round_trip():
    img = _noise(5, 7, 4)
    assert np.array_equal(np.asarray(tensor_to_pil(pil_to_tensor(img))), np.asarray(img))


# ------------------------------------------------------------------------------------ emoji builder
def _record(unified, category, short, **extra):
    return {"unified": unified, "category": category, "short_name": short, "image": f"{unified.lower()}.png",
            "sort_order": int(unified.split("-")[0], 16), "has_img_google": True, "has_img_twitter": True, **extra}


@pytest.fixture
def emoji_src(tmp_path):
    """(metadata, {style: image folder}): 40 smileys, 20 animals, 2 components, with a few problems."""
    meta = [_record(f"1F6{i:02X}", "Smileys & Emotion", f"smile {i}") for i in range(40)]
    meta += [_record(f"1F4{i:02X}", "Animals & Nature", f"animal-{i}") for i in range(20)]
    meta += [_record("1F3FB", "Component", "skin-tone-2"), _record("1F3FC", "Component", "skin-tone-3")]
    meta[0]["skin_variations"] = {"1F3FB": {"unified": "1F600-1F3FB", "image": "1f600-1f3fb.png",
                                            "has_img_google": True, "has_img_twitter": True}}
    meta[1]["has_img_twitter"] = False        # kept with google only
    dirs = {s: tmp_path / "src" / s for s in E.STYLES}
    for k, style in enumerate(E.STYLES):
        dirs[style].mkdir(parents=True)
        for rec in meta + [meta[0]["skin_variations"]["1F3FB"]]:
            rgba = np.zeros((64, 64, 4), np.uint8)
            rgba[16:48, 16:48] = (255, 200 * k, 0, 255)   # opaque square on transparent
            Image.fromarray(rgba, "RGBA").save(dirs[style] / rec["image"])
    (dirs["twitter"] / meta[2]["image"]).write_bytes(b"garbage")                       # unreadable
    Image.new("I;16", (8, 8), 1000).save(dirs["twitter"] / meta[3]["image"])                 # odd mode
    (dirs["google"] / meta[4]["image"]).unlink()                                        # flag says yes, file gone
    return meta, dirs


def test_select_emoji_categories_and_variants(emoji_src):
    meta, _ = emoji_src
    items, left_out = E.select_emoji(meta)
    assert {it.class_name for it in items} == {"smileys_and_emotion", "animals_and_nature"}
    assert len(items) == 60 and left_out == []
    assert not any("1f3fb" in it.key for it in items)                 # no skin tones by default
    assert next(it for it in items if it.group == "1F601").styles == ("google",)
    with_tones, _ = E.select_emoji(meta, include_variations=True)
    tone = next(it for it in with_tones if it.key.endswith("1f600-1f3fb"))
    assert tone.group == "1F600" and len(with_tones) == 61
    assert E.class_folder_name("Smileys & Emotion") == "smileys_and_emotion"


def test_split_is_grouped_deterministic_and_about_ten_percent(emoji_src):
    meta, _ = emoji_src
    items, _ = E.select_emoji(meta, include_variations=True)
    split = E.assign_splits(items, 0.1)
    assert split == E.assign_splits(list(reversed(items)), 0.1)       # order of the metadata is irrelevant
    val = [it for it in items if split[it.group] == "val"]
    by_class = {c: sum(it.class_name == c for it in val) for c in ("smileys_and_emotion", "animals_and_nature")}
    assert 3 <= by_class["smileys_and_emotion"] <= 5 and by_class["animals_and_nature"] == 2
    linked = E.assign_splits(items, 0.5, links=[("1F600", "1F401")])
    assert linked["1F600"] == linked["1F401"]                          # linked groups share a side


def test_write_dataset_layout_notice_stats_and_force(emoji_src, tmp_path):
    meta, dirs = emoji_src
    items, left_out = E.select_emoji(meta)
    root = tmp_path / "out" / "emoji"
    stats = E.write_dataset(items, dirs, root, size=32, left_out=left_out, progress=False)
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))
    sides = {}
    for f in files:
        split, cls, name = f.split("/")
        assert cls in ("smileys_and_emotion", "animals_and_nature")
        sides.setdefault(name.rsplit("_", 1)[0], set()).add(split)
    assert all(len(s) == 1 for s in sides.values())                   # both styles of an emoji: one side
    assert Image.open(root / files[0]).size == (32, 32)
    img = np.asarray(Image.open(root / files[0]))
    assert img[0, 0].tolist() == [255, 255, 255] and img[16, 16].tolist() != [255, 255, 255]
    reasons = sorted(s["reason"].split(":")[0] for s in stats["skipped"])
    assert reasons == ["file missing in the package", "unexpected mode I;16", "unreadable"]
    assert len(files) == 60 * 2 - 1 - 3 == stats["totals"]["train"] + stats["totals"]["val"]
    assert "Apache" in (root / "NOTICE").read_text() and "CC-BY 4.0" in (root / "NOTICE").read_text()
    assert json.loads((root / "stats.json").read_text())["images"] == stats["images"]
    assert not [p for p in root.parent.iterdir() if p.name != "emoji"]  # no temp folders left behind

    with pytest.raises(ValueError, match="not empty; pass --force"):
        E.write_dataset(items, dirs, root, progress=False)
    E.write_dataset(items, dirs, root, size=64, force=True, progress=False)
    assert Image.open(next(root.rglob("*.png"))).size == (64, 64)
    other = tmp_path / "precious"
    other.mkdir()
    (other / "thesis.tex").write_text("...")
    with pytest.raises(ValueError, match="refusing to replace"):
        E.write_dataset(items, dirs, other, force=True, progress=False)
    assert (other / "thesis.tex").exists()


# ------------------------------------------------------------------------------------ fetch helpers
ABC_SHA512 = ("ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
              "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f")  # FIPS 180-2 test vector


def test_integrity_check():
    good = "sha512-" + base64.b64encode(bytes.fromhex(ABC_SHA512)).decode()
    assert E.integrity_of(b"abc") == good
    E.check_integrity(b"abc", good)
    E.check_integrity(b"abc", "sha1-whatever " + good)
    with pytest.raises(ValueError, match="sha512 mismatch"):
        E.check_integrity(b"abd", good)
    with pytest.raises(ValueError, match="no sha512"):
        E.check_integrity(b"abc", "sha1-qZk+NkcGgWq6PiVxeFDCbJzQ2J0=")


def _tar(path, members):
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_safe_extract_rejects_escapes(tmp_path):
    dest = tmp_path / "dest"
    for bad in ("../evil", "package/../../evil", "/abs/evil"):
        tgz = _tar(tmp_path / "bad.tgz", [("package/ok.txt", b"ok"), (bad, b"boom")])
        with pytest.raises(ValueError, match="unsafe archive member"):
            E.safe_extract(tgz, dest)
        assert not (tmp_path / "evil").exists() and not (dest / "package" / "ok.txt").exists()
    with tarfile.open(tmp_path / "link.tgz", "w:gz") as tar:
        link = tarfile.TarInfo("package/link")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    with pytest.raises(ValueError, match="links"):
        E.safe_extract(tmp_path / "link.tgz", dest)
    good = _tar(tmp_path / "good.tgz", [("package/a/b.txt", b"b"), ("package/c.txt", b"c")])
    E.safe_extract(good, dest, prefixes=("package/a/",))
    assert (dest / "package/a/b.txt").read_bytes() == b"b" and not (dest / "package/c.txt").exists()


def test_unpack_packages_and_cached_fetch_without_network(tmp_path, monkeypatch):
    meta = [_record("1F600", "Smileys & Emotion", "grinning")]
    png = io.BytesIO()
    Image.new("RGBA", (64, 64), (255, 0, 0, 255)).save(png, "PNG")
    tarballs = {"meta": _tar(tmp_path / "m.tgz", [("package/emoji.json", json.dumps(meta).encode()),
                                                   ("package/LICENSE", b"MIT ...")])}
    for s in E.STYLES:
        tarballs[s] = _tar(tmp_path / f"{s}.tgz", [(f"package/img/{s}/64/1f600.png", png.getvalue()),
                                                    (f"package/img/{s}/sheets/64.png", b"big sheet")])
    got, dirs, lic = E.unpack_packages(tarballs, tmp_path / "work")
    assert got == meta and lic == "MIT ..." and (dirs["google"] / "1f600.png").exists()
    assert not (tmp_path / "work" / "google" / "package" / "img" / "google" / "sheets").exists()

    # a cached tarball that verifies is used as is; one that does not is fetched again
    def no_network(*a, **k):
        raise AssertionError("network used")
    monkeypatch.setattr(E, "registry_integrity", no_network)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "pkg-1.0.0.tgz").write_bytes(b"abc")
    good = E.integrity_of(b"abc")
    assert E.fetch_package("pkg", "1.0.0", cache, integrity=good) == cache / "pkg-1.0.0.tgz"
    (cache / "pkg-1.0.0.tgz").write_bytes(b"torn")
    with pytest.raises(AssertionError, match="network used"):
        E.fetch_package("pkg", "1.0.0", cache, integrity=good)
    assert not (cache / "pkg-1.0.0.tgz").exists()


def test_cli_registers_data_emoji():
    from mambagen.cli import build_parser

    args = build_parser().parse_args(["data", "emoji", "/tmp/x", "--size", "32", "--styles", "twitter"])
    from mambagen.cli.data import cmd_emoji
    assert args.fn is cmd_emoji and args.size == 32 and args.styles == "twitter"
    with pytest.raises(ValueError, match="unknown style"):
        E.build_emoji_dataset("/tmp/never-written", styles=["apple"])


def test_select_emoji_at_the_subcategory_level(emoji_src):
    meta, _ = emoji_src
    for i, rec in enumerate(meta):
        if rec["category"] == "Smileys & Emotion":
            rec["subcategory"] = "face-smiling" if i < 30 else "heart"
        elif rec["category"] == "Animals & Nature":
            rec["subcategory"] = "animal-mammal" if i < 55 else "plant-flower"
    items, _ = E.select_emoji(meta, level="subcategory", min_emoji=6)
    counts = {c: sum(it.class_name == c for it in items) for c in {it.class_name for it in items}}
    # plant-flower has 5 emoji, fewer than 6: it joins its category's "other"
    assert counts == {"face_smiling": 30, "heart": 10, "animal_mammal": 15, "animals_and_nature_other": 5}
    assert next(it for it in items if it.class_name == "heart").category == "Smileys & Emotion / heart"
    split = E.assign_splits(items, 0.1)
    assert {split[it.group] for it in items} == {"train", "val"}
    named, left_out = E.select_emoji(meta, level="subcategory", min_emoji=6, drop_other=True)
    assert {it.class_name for it in named} == {"face_smiling", "heart", "animal_mammal"} and len(named) == 55
    assert sum("animals_and_nature_other (dropped)" in r["reason"] for r in left_out) == 5
    with pytest.raises(ValueError, match="class level"):
        E.select_emoji(meta, level="emoji")
    with pytest.raises(ValueError, match="needs --level subcategory"):
        E.select_emoji(meta, drop_other=True)
    for bad in (dict(level="emoji"), dict(drop_other=True)):   # refused before anything is fetched
        with pytest.raises(ValueError, match="class level|needs --level subcategory"):
            E.build_emoji_dataset("/tmp/never-written", cache_dir="/nonexistent/cache", **bad)


def test_a_code_named_style_is_matched_to_the_metadata_by_unified_code(tmp_path):
    """Fluent's images are assets/<code>.webp: matched with or without FE0F, variants too, missing ones
    marked so the emoji keeps its other styles."""
    meta = [_record("1F600", "Smileys & Emotion", "grinning"), _record("00A9-FE0F", "Symbols", "copyright"),
            _record("1F44B", "People & Body", "wave"), _record("1F9FF", "Objects", "nazar")]
    meta[2]["skin_variations"] = {"1F3FB": {"unified": "1F44B-1F3FB", "image": "1f44b-1f3fb.png"}}
    webp = io.BytesIO()
    Image.new("RGBA", (128, 128), (0, 200, 0, 255)).save(webp, "WEBP")
    fluent = _tar(tmp_path / "f.tgz", [(f"package/assets/{c}.webp", webp.getvalue())
                                        for c in ("1f600", "00a9", "1f44b", "1f44b-1f3fb")])
    meta_tgz = _tar(tmp_path / "m.tgz", [("package/emoji.json", json.dumps(meta).encode())])
    got, dirs, _ = E.unpack_packages({"meta": meta_tgz, "fluent": fluent}, tmp_path / "work", styles=("fluent",))
    assert [r["has_img_fluent"] for r in got] == [True, True, True, False]      # 00A9-FE0F found as 00a9
    assert got[2]["skin_variations"]["1F3FB"]["has_img_fluent"] is True
    assert Image.open(dirs["fluent"] / "1f600.png").format == "WEBP"           # linked under the metadata's name
    items, left_out = E.select_emoji(got, styles=("fluent",), include_variations=True)
    assert {it.key.split("_")[-1] for it in items} == {"1f600", "00a9-fe0f", "1f44b", "1f44b-1f3fb"}
    assert [d["emoji"] for d in left_out] == ["nazar_1f9ff"]
    assert "Fluent Emoji" in E.notice_text(["fluent"]) and "MIT" in E.LICENSES["fluent"]


SVG_DOT = (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="32" height="32" viewBox="0 0 32 32">'
           b'<circle cx="16" cy="16" r="12" fill="#d01030"/></svg>')


def test_flat_vector_art_is_rendered_anti_aliased_and_a_bad_svg_is_skipped(tmp_path):
    """fluent-flat's assets/<code>.svg go through resvg: an emoji on white at the asked size, its edge
    anti-aliased (rendered at 4x, box-averaged down); an unreadable SVG is one skipped image with a reason."""
    pytest.importorskip("resvg_py")
    meta = [_record("1F600", "Smileys & Emotion", "grinning"), _record("1F601", "Smileys & Emotion", "beaming")]
    flat = _tar(tmp_path / "f.tgz", [("package/assets/1f600.svg", SVG_DOT),
                                      ("package/assets/1f601.svg", b"<svg xmlns='http://www.w3.org/2000/svg'><circle")])
    meta_tgz = _tar(tmp_path / "m.tgz", [("package/emoji.json", json.dumps(meta).encode())])
    got, dirs, _ = E.unpack_packages({"meta": meta_tgz, "fluent-flat": flat}, tmp_path / "work", styles=("fluent-flat",))
    img = np.asarray(E.prepare_emoji_image(dirs["fluent-flat"] / "1f600.png", 32)).astype(int)
    assert img.shape == (32, 32, 3) and img[0, 0].tolist() == [255, 255, 255]
    assert abs(img[16, 16] - [0xD0, 0x10, 0x30]).max() <= 2                 # the circle's colour at its centre
    blended = ((img[..., 1] > 0x30) & (img[..., 1] < 0xE0)).sum()            # rim pixels between red and white
    assert 20 < blended < 120                                                # anti-aliased all round, not blurred
    items, _ = E.select_emoji(got, styles=("fluent-flat",))
    stats = E.write_dataset(items, dirs, tmp_path / "ds", size=32, val_fraction=0.0, progress=False)
    assert stats["totals"]["train"] == 1 and [s["reason"].split(":")[0] for s in stats["skipped"]] == ["unreadable SVG"]
    assert "Fluent Emoji (Flat)" in (tmp_path / "ds" / "NOTICE").read_text()
    two = {**stats, "styles": ["fluent", "fluent-flat"],
           "images": {sp: {c: {"fluent": 1, "fluent-flat": 1} for c in v} for sp, v in stats["images"].items()}}
    assert "train fluent  train fluent-flat" in E.format_summary(two).splitlines()[0]   # long names keep a gap


def test_flat_style_without_its_renderer_says_how_to_install_it_before_any_download(monkeypatch):
    import builtins
    real_import = builtins.__import__
    monkeypatch.setattr(builtins, "__import__", lambda name, *a, **k: (_ for _ in ()).throw(ImportError(name))
                        if name == "resvg_py" else real_import(name, *a, **k))
    with pytest.raises(ValueError, match=r"pip install 'mambagen\[svg\]'"):
        E.build_emoji_dataset("/tmp/never-written", styles=("google", "fluent-flat"), cache_dir="/nonexistent/cache")


def test_shifted_views_keep_the_emoji_on_white_and_are_a_function_of_the_index(tmp_path):
    from mambagen.data.tokens import TokenDataset, shifted_view, tokenize_dataset
    import mambagen
    img = torch.ones(2, 3, 32, 32)
    img[:, :, 8:24, 8:24] = -1.0                                     # a dark square on white
    a, b = shifted_view(img, 0, 1), shifted_view(img, 0, 1)
    assert torch.equal(a, b) and not torch.equal(a, shifted_view(img, 0, 2)) and not torch.equal(a, img)
    assert a[:, :, 0, 0].min() > 0.99 and a[:, :, -1, -1].min() > 0.99     # the border stays white
    assert (a < 0).float().mean() < (img < 0).float().mean() + 1e-6        # zoomed out, never in

    class Items(torch.utils.data.Dataset):
        classes = ["x"]

        def __len__(self):
            return 4

        def __getitem__(self, i):
            return img[0], 0
    tok = mambagen.create_tokenizer("vq-tiny")
    out = tokenize_dataset(tok, Items(), tmp_path / "t", batch_size=2, augment=3, progress=False)
    ds = TokenDataset(out)
    assert ds.tokens.shape[:2] == (4, 4) and ds.meta["augment"] == 3
    seen = {tuple(ds.batch(torch.tensor([0]), epoch=e)[0][0].tolist()) for e in range(12)}
    assert len(seen) > 1                                                   # epochs draw different views
