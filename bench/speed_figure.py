"""docs/speed_h200.png: each decoding path's images/s on the H200 (ours and the official code) against its
bound on this GPU, on a log scale, roofline style: how far each path is from what the hardware allows.
Ours come from the bench JSON given; the official numbers and the bounds are issue 18's (docs/speed.md).
Usage: python bench/speed_figure.py OUT.png RESULT.json [RESULT.json ...]"""
import json
import math
import sys

from PIL import Image, ImageDraw, ImageFont

# model: (label, official img/s, bound img/s, what bounds it)
PATHS = {"aim-l": ("AiM-L", 9.2, 111, "bytes"), "gpt-l": ("GPT-L", 37.8, 250, "bytes"),
         "arpg-l": ("ARPG-L", 10.0, 1300, "bytes"), "mvar-d16": ("M-VAR-d16", 39.3, 600, "compute"),
         "var-d16": ("VAR-d16", 96.4, 900, "compute")}
W, H, LEFT, RIGHT, TOP, BOTTOM = 900, 460, 70, 20, 50, 60
LO, HI = 5.0, 3000.0                                    # the log axis, images/s


def _y(v: float) -> float:
    return TOP + (H - TOP - BOTTOM) * (1 - (math.log10(v) - math.log10(LO)) / (math.log10(HI) - math.log10(LO)))


def main(out, *results):
    ours = {}
    for path in results:
        for r in json.load(open(path))["records"]:
            if r["kind"] == "generation" and r["batch"] == 16 and r["model"] in PATHS and not r.get("image_size"):
                ours[r["model"]] = max(ours.get(r["model"], 0), r["images_per_s"])
    names = [m for m in PATHS if m in ours]
    img = Image.new("RGB", (W, H), "white")
    d, font = ImageDraw.Draw(img), ImageFont.load_default()
    d.text((LEFT, 12), "Decoding on one H200: achieved vs bound (images/s, batch 16, CFG, bf16, 256 px; log scale)",
           fill="black", font=font)
    for v in (10, 30, 100, 300, 1000, 3000):            # the axis
        y = _y(v)
        d.line([(LEFT, y), (W - RIGHT, y)], fill=(230, 230, 230))
        d.text((LEFT - 8 - d.textlength(str(v), font=font), y - 6), str(v), fill="black", font=font)
    slot = (W - LEFT - RIGHT) / len(names)
    base = _y(LO)
    for i, m in enumerate(names):
        label, official, bound, what = PATHS[m]
        x = LEFT + slot * (i + 0.5)
        for dx, v, colour in ((-0.2, official, (187, 187, 187)), (0.2, ours[m], (58, 110, 165))):
            d.rectangle([x + (dx - 0.17) * slot, _y(v), x + (dx + 0.17) * slot, base], fill=colour)
            d.text((x + dx * slot - d.textlength(f"{v:.0f}", font=font) / 2, _y(v) - 14), f"{v:.0f}", fill="black", font=font)
        d.line([(x - 0.45 * slot, _y(bound)), (x + 0.45 * slot, _y(bound))], fill=(192, 57, 43), width=3)
        note = f"{ours[m] / bound:.0%} of the {what} bound {bound}"
        d.text((x - d.textlength(note, font=font) / 2, _y(bound) - 16), note, fill=(192, 57, 43), font=font)
        d.text((x - d.textlength(label, font=font) / 2, base + 8), label, fill="black", font=font)
    for j, (text, colour) in enumerate((("official code", (187, 187, 187)), ("mambagen fast path", (58, 110, 165)),
                                        ("bound on this GPU", (192, 57, 43)))):
        x0 = LEFT + 10 + j * 190
        d.rectangle([x0, H - 26, x0 + 14, H - 14], fill=colour)
        d.text((x0 + 20, H - 26), text, fill="black", font=font)
    img.save(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(*sys.argv[1:])
