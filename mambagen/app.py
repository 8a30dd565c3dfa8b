"""`mambagen app`: a local web page (Gradio, the `app` extra) to sample and edit with any loaded model.

    Generate   classes by name, images per class, the sampling setting (the checkpoint's recommendation
               by default, the family's own options), a grid with a progress bar, PNG and .npz downloads
    Edit       an uploaded or generated image, a brush for the region to regenerate (eraser included),
               inpaint / outpaint (and ARPG's larger canvas), results beside the original
    Model      which generator and tokenizer are loaded, their sizes, device, recommended setting

Every handler goes through the same library calls as the command line (`Sampler`, `sample.edit`), so
CUDA takes the family's fast path; long work runs in Gradio's queue (one job at a time, cancellable),
and bad input is a message on the page, never a traceback.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from .io import CheckpointError


class Models:
    """The pipelines named on the command line, loaded on first use and kept."""

    def __init__(self, specs: list[str], device: torch.device):
        self.specs, self.device, self._loaded = list(dict.fromkeys(specs)), device, {}

    def get(self, spec: str):
        """(generator, tokenizer, config.json) of `spec` (a directory, 'demo', official:NAME, hf:ORG/REPO)."""
        if spec not in self._loaded:
            from .checkpoint import Pipeline
            from .sources import load
            obj, meta = load(spec, device=self.device, with_meta=True)
            if not isinstance(obj, Pipeline):
                raise ValueError(f"{spec} holds no tokenizer: the app needs a pipeline (generator + tokenizer)")
            from .sample.pipeline import set_precision
            set_precision(obj.generator, obj.tokenizer, "auto", self.device)
            self._loaded[spec] = (obj.generator, obj.tokenizer, meta)
        return self._loaded[spec]


def class_choices(meta: dict, num_classes: int) -> list[str]:
    from .checkpoint import class_names
    names = class_names(meta)
    return names if len(names) == num_classes else [str(i) for i in range(num_classes)]


def describe(spec: str, models: Models) -> str:
    from .models.registry import count_params, family_of
    gen, tok, meta = models.get(spec)
    family = family_of(gen)
    rec = meta.get("sampling") or {}
    lines = [f"### {spec}", "", f"- generator: **{family.name}** ({family.description}), "
             f"{count_params(gen):,} parameters, {next(gen.parameters()).dtype}",
             f"- tokenizer: {type(tok).__name__}, {tok.codebook_size} codes, downsample {tok.downsample}",
             f"- device: {models.device}", f"- classes: {gen.config.num_classes}",
             f"- edits: {', '.join(sorted(family.edits)) or 'none'}",
             f"- recommended sampling: {rec or 'the defaults'}"]
    if meta.get("published"):
        lines.append(f"- published: {meta['published']} ({meta.get('published_source', '')})")
    return "\n".join(lines)


def _sampling(meta: dict, family, cfg, temperature, top_k, top_p, seed, steps):
    from .sample.config import SamplingConfig
    options = {"steps": int(steps)} if "steps" in family.sampling_options else {}
    return SamplingConfig.recommended(meta.get("sampling"), cfg_scale=cfg, temperature=temperature,
                                      top_k=int(top_k), top_p=top_p, seed=int(seed), **options)


def generate(models: Models, spec: str, classes: list[str], per_class: int, cfg: float, temperature: float,
             top_k: int, top_p: float, seed: int, steps: int, progress=None):
    """(grid PNG path, npz path, [PIL images]) for the chosen classes."""
    from .images import make_grid, save_image, save_npz, to_uint8
    from .models.registry import family_of
    from .sample.pipeline import Sampler
    gen, tok, meta = models.get(spec)
    choices = class_choices(meta, gen.config.num_classes)
    if not classes:
        raise ValueError("choose at least one class")
    unknown = [c for c in classes if c not in choices]
    if unknown:
        raise ValueError(f"unknown class {unknown[0]!r}; this model's classes: {', '.join(choices[:20])}")
    if not 1 <= int(per_class) <= 16:
        raise ValueError("images per class must be between 1 and 16")
    ids = [choices.index(c) for c in classes]
    sampling = _sampling(meta, family_of(gen), cfg, temperature, top_k, top_p, seed, steps)
    labels = torch.tensor([c for c in ids for _ in range(int(per_class))], device=models.device)
    rng = torch.Generator(device=models.device).manual_seed(sampling.seed)
    sampler = Sampler(gen, tok, sampling)
    images = []
    for i, chunk in enumerate(labels.split(16)):
        if progress is not None:
            progress((i, -(-len(labels) // 16)), desc="sampling")
        images.append(sampler.sample(chunk, rng)[0].cpu())
    arr = to_uint8(torch.cat(images))
    out = Path(tempfile.mkdtemp(prefix="mambagen-app-"))
    grid = save_image(make_grid(arr, nrow=int(per_class), scale=2), out / "samples.png")
    npz = save_npz(out / "samples.npz", arr, labels.cpu().numpy())
    from PIL import Image
    return str(grid), str(npz), [Image.fromarray(a) for a in arr]


def mask_of(editor: dict | None, size: int) -> tuple[object, torch.Tensor, list[str]]:
    """(the image resized to the model's size, region (size, size) bool from the painted layers, notices)."""
    from PIL import Image
    notes = []
    if not editor or editor.get("background") is None:
        raise ValueError("upload an image (or send one from Generate) first")
    background = editor["background"]
    if not isinstance(background, Image.Image):
        background = Image.fromarray(np.asarray(background))
    transparent = background.mode in ("RGBA", "LA", "PA") and np.asarray(background.convert("RGBA"))[..., 3].min() < 255
    if background.mode not in ("RGB", "RGBA") or transparent:
        notes.append(f"the image was {background.mode}{' with transparency' if transparent else ''}; "
                     "converted to RGB on white")
    painted = np.zeros(background.size[::-1], dtype=bool)
    for layer in editor.get("layers") or []:
        layer = layer if isinstance(layer, Image.Image) else Image.fromarray(np.asarray(layer))
        painted |= np.asarray(layer.convert("RGBA"))[..., 3] > 0
    if background.size != (size, size):
        notes.append(f"the image was {background.size[0]}x{background.size[1]}; resized to {size}x{size}")
    mask = Image.fromarray(painted.astype(np.uint8) * 255).resize((size, size), Image.NEAREST)
    return background, torch.from_numpy(np.asarray(mask) > 127), notes


def edit_image(models: Models, spec: str, editor: dict | None, mode: str, classes: list[str], num: int,
               canvas: int, cfg: float, temperature: float, top_k: int, top_p: float, seed: int, steps: int):
    """([original, region shown, edits...] as PIL images, a notice line)."""
    from PIL import Image

    from .data.folder import pil_to_tensor, resize_center_crop, to_rgb
    from .images import to_uint8
    from .models.registry import family_of
    from .sample.edit import border_region, check_region, edit, image_size_of, outpaint_canvas
    gen, tok, meta = models.get(spec)
    family = family_of(gen)
    size = image_size_of(gen, tok)
    background, region, notes = mask_of(editor, size)
    image = pil_to_tensor(resize_center_crop(to_rgb(background), size))[None].to(models.device)
    choices = class_choices(meta, gen.config.num_classes)
    ids = [choices.index(c) for c in (classes or choices[:1]) if c in choices] or [0]
    labels = torch.tensor([ids[i % len(ids)] for i in range(int(num))], device=models.device)
    sampling = _sampling(meta, family, cfg, temperature, top_k, top_p, seed, steps)
    rng = torch.Generator(device=models.device).manual_seed(sampling.seed)
    images = image.expand(int(num), -1, -1, -1)
    if mode == "canvas":
        if "canvas" not in family.edits:
            raise ValueError(f"{family.name} models cannot outpaint onto a larger canvas (ARPG can)")
        out = outpaint_canvas(gen, tok, images, labels, int(canvas), sampling, rng)
        return [Image.fromarray(a) for a in to_uint8(torch.cat([out]))], "; ".join(notes)
    if mode == "outpaint":
        region = ~region if region.any() else border_region(size, 0.5)
    if not region.any():
        raise ValueError("the mask is empty: paint the region to regenerate with the brush")
    check_region(region, image)
    out = edit(gen, tok, images, region.to(models.device), labels, sampling, rng)
    redrawn = family.sampler.regenerated(region, gen.config.grid).to(models.device)
    if not torch.equal(redrawn.cpu(), region):
        notes.append(f"a {family.name} model continues in raster order: every row from the region's first "
                     "token row down is regenerated (greyed in the second image)")
    shown = image.clone()
    shown[:, :, redrawn] = shown[:, :, redrawn] * 0.3 + 0.7
    # outside what was redrawn the original pixels stay (the decoder's re-rendering of kept tokens is close,
    # not equal)
    kept = torch.where(redrawn, out.to(image.dtype), image)
    arr = to_uint8(torch.cat([image, shown, kept]))
    return [Image.fromarray(a) for a in arr], "; ".join(notes)


def build_app(specs: list[str], device: torch.device):
    """The Gradio Blocks of the page."""
    import gradio as gr

    models = Models(specs, device)

    def guarded(fn):
        def run(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except (ValueError, CheckpointError, KeyError) as e:
                raise gr.Error(str(e.args[0] if isinstance(e, KeyError) and e.args else e)) from None
        return run

    first = specs[0]
    gen, _, meta = models.get(first)
    choices = class_choices(meta, gen.config.num_classes)
    rec = meta.get("sampling") or {}
    with gr.Blocks(title="mambagen") as page:
        gr.Markdown("# mambagen: class-conditional image generation (AiM, M-VAR, ARPG, VAR, LlamaGen)")
        model = gr.Dropdown(specs, value=first, label="model", elem_id="model")
        with gr.Accordion("sampling", open=False):
            with gr.Row():
                cfg = gr.Number(value=float(rec.get("cfg", rec.get("cfg_scale", 2.0))), label="guidance (1 = off)",
                                elem_id="cfg")
                temperature = gr.Number(value=float(rec.get("temperature", 1.0)), label="temperature")
                top_k = gr.Number(value=int(rec.get("top_k", 0)), label="top-k (0 = off)", precision=0)
                top_p = gr.Number(value=float(rec.get("top_p", 1.0)), label="top-p (1 = off)")
                seed = gr.Number(value=0, label="seed", precision=0)
                steps = gr.Number(value=int(rec.get("steps", 64)), label="steps (ARPG)", precision=0)
        setting = [cfg, temperature, top_k, top_p, seed, steps]
        with gr.Tab("Generate"):
            classes = gr.Dropdown(choices, value=choices[:2], multiselect=True, label="classes", elem_id="classes")
            per_class = gr.Slider(1, 16, value=4, step=1, label="images per class")
            with gr.Row():
                go = gr.Button("Generate", variant="primary", elem_id="generate")
                stop = gr.Button("Cancel", elem_id="cancel-generate")
            grid = gr.Image(label="samples", type="filepath", elem_id="grid")
            files = gr.File(label="downloads (PNG, .npz)", file_count="multiple")
            gallery = gr.Gallery(label="samples (pick one to edit)", columns=8, elem_id="gallery", format="png")
            to_edit = gr.Button("Edit the selected sample", elem_id="to-edit")
        with gr.Tab("Edit"):
            editor = gr.ImageEditor(type="pil", label="paint the region to regenerate", elem_id="editor", format="png",
                                    brush=gr.Brush(colors=["#ff00ff"], default_size=12, color_mode="fixed"),
                                    eraser=gr.Eraser(default_size=12))
            with gr.Row():
                mode = gr.Radio(["inpaint", "outpaint", "canvas"], value="inpaint", label="mode", elem_id="mode")
                edit_classes = gr.Dropdown(choices, value=choices[:1], multiselect=True, label="classes")
                num = gr.Slider(1, 8, value=4, step=1, label="edits")
                canvas = gr.Number(value=24, label="canvas tokens a side (ARPG)", precision=0)
            with gr.Row():
                run_edit = gr.Button("Edit", variant="primary", elem_id="run-edit")
                stop_edit = gr.Button("Cancel", elem_id="cancel-edit")
            notice = gr.Markdown(elem_id="notice")
            results = gr.Gallery(label="original, region, edits", columns=6, elem_id="results", format="png")
        with gr.Tab("Model"):
            info = gr.Markdown(describe(first, models), elem_id="info")

        selected = gr.State(None)

        def on_generate(spec, cls, n, *rest, progress=gr.Progress()):
            png, npz, imgs = guarded(generate)(models, spec, cls, n, *rest, progress=progress)
            return png, [png, npz], imgs

        generating = go.click(on_generate, [model, classes, per_class, *setting], [grid, files, gallery],
                              concurrency_limit=1)
        stop.click(None, None, None, cancels=[generating])
        def pick(evt: gr.SelectData):
            value = evt.value
            return value["image"]["path"] if isinstance(value, dict) and "image" in value else None

        gallery.select(pick, None, [selected])
        to_edit.click(lambda path: {"background": path, "layers": [], "composite": path} if path else None,
                      [selected], [editor])
        editing = run_edit.click(lambda *a: guarded(edit_image)(models, *a),
                                 [model, editor, mode, edit_classes, num, canvas, *setting], [results, notice],
                                 concurrency_limit=1)
        stop_edit.click(None, None, None, cancels=[editing])

        def on_model(spec):
            gen, _, meta = guarded(models.get)(spec)
            names = class_choices(meta, gen.config.num_classes)
            return (gr.update(choices=names, value=names[:2]), gr.update(choices=names, value=names[:1]),
                    describe(spec, models))

        model.change(on_model, [model], [classes, edit_classes, info])
    return page.queue(default_concurrency_limit=1)
