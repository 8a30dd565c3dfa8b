"""Run logging shared by every trainer: a long-format CSV, TensorBoard event files, PNG curves.

    logger = RunLogger("runs/vq")           # enabled=False on non-zero ranks: everything is a no-op
    logger.log(step, "train", loss=0.31, lr=1e-4)
    logger.log(step, "val", psnr=24.1)
    logger.plot()                           # runs/vq/curves.png
    logger.close()

Files in `out_dir`:
  log.csv                      one row per scalar: step,split,name,value,wall_time (long format, so new
                               metric names can appear at any time without rewriting a header)
  tb/events.out.tfevents.*     TensorBoard scalars, tag "<split>/<name>"; written by hand in the TFRecord
                               format (no tensorboard/tensorflow dependency); a resumed run adds a file
  curves.png                   `plot()`: one panel per metric, drawn with PIL only

Resuming from step S: `truncate_after(S)` drops the CSV rows of the crashed tail (step > S) and writes a
TensorBoard SessionLog START event at step S + 1, which makes TensorBoard discard the tail's events too.
"""
from __future__ import annotations

import csv
import math
import os
import socket
import struct
import time
from collections import defaultdict
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from ..io import atomic_path

CSV_HEADER = ["step", "split", "name", "value", "wall_time"]


# ============================================================================ TFRecord / Event protobuf
def _make_crc32c_table() -> list[int]:
    poly = 0x82F63B78  # Castagnoli polynomial, bit-reversed
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C_TABLE = _make_crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of `data`, as TFRecord uses; pure Python (event records are small)."""
    crc = 0xFFFFFFFF
    table = _CRC32C_TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    # TFRecord stores a rotated + offset CRC so that CRCs of data containing CRCs stay well-mixed
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord(data: bytes) -> bytes:
    """One record: uint64 length, masked crc of the length bytes, data, masked crc of data (little endian)."""
    header = struct.pack("<Q", len(data))
    return header + struct.pack("<I", masked_crc32c(header)) + data + struct.pack("<I", masked_crc32c(data))


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # int64 negatives are encoded as 64-bit two's complement
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(field: int, wire: int) -> bytes:
    return _varint((field << 3) | wire)


def _len_delimited(field: int, payload: bytes) -> bytes:
    return _key(field, 2) + _varint(len(payload)) + payload


def encode_event(step: int, wall_time: float, scalars: dict[str, float] | None = None,
                 file_version: str | None = None, session_start: bool = False) -> bytes:
    """A serialized tensorflow `Event`:
    wall_time = 1 (double), step = 2 (int64), file_version = 3 (string), summary = 5, session_log = 7.
    Summary { repeated Value value = 1 }, Value { string tag = 1; float simple_value = 2 }."""
    msg = _key(1, 1) + struct.pack("<d", wall_time) + _key(2, 0) + _varint(int(step))
    if file_version is not None:
        msg += _len_delimited(3, file_version.encode())
    if scalars:
        values = b"".join(_len_delimited(1, _len_delimited(1, tag.encode()) + _key(2, 5) + struct.pack("<f", v))
                          for tag, v in scalars.items())
        msg += _len_delimited(5, values)
    if session_start:
        msg += _len_delimited(7, _key(1, 0) + _varint(1))  # SessionLog { status = START (1) }
    return msg


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint in protobuf message")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return result, pos


def _parse_message(buf: bytes) -> list[tuple[int, int, object]]:
    """A protobuf message -> [(field, wire type, value)]: ints for varints, bytes for the rest."""
    fields, pos = [], 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            n, pos = _read_varint(buf, pos)
            value, pos = buf[pos:pos + n], pos + n
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire} (field {field})")
        fields.append((field, wire, value))
    return fields


def read_records(path: str | os.PathLike) -> list[bytes]:
    """The data of every record of a TFRecord file, checking both CRCs of each."""
    raw, records, pos = Path(path).read_bytes(), [], 0
    while pos < len(raw):
        if pos + 12 > len(raw):
            raise ValueError(f"{path}: truncated record header at byte {pos}")
        header = raw[pos:pos + 8]
        (n,) = struct.unpack("<Q", header)
        (crc,) = struct.unpack("<I", raw[pos + 8:pos + 12])
        if crc != masked_crc32c(header):
            raise ValueError(f"{path}: bad length CRC at byte {pos}")
        data = raw[pos + 12:pos + 12 + n]
        if len(data) != n or pos + 16 + n > len(raw):
            raise ValueError(f"{path}: truncated record at byte {pos}")
        (crc,) = struct.unpack("<I", raw[pos + 12 + n:pos + 16 + n])
        if crc != masked_crc32c(data):
            raise ValueError(f"{path}: bad data CRC at byte {pos}")
        records.append(data)
        pos += 16 + n
    return records


def read_events(path: str | os.PathLike) -> list[tuple[int, str, float]]:
    """Scalar summaries of an event file as (step, tag, value), in file order (no purging)."""
    out = []
    for record in read_records(path):
        fields = _parse_message(record)
        step = next((v for f, w, v in fields if f == 2 and w == 0), 0)
        for f, w, summary in fields:
            if f != 5 or w != 2:
                continue
            for vf, _, value in _parse_message(summary):
                if vf != 1:
                    continue
                parts = {pf: pv for pf, _, pv in _parse_message(value)}
                if 1 in parts and 2 in parts:
                    out.append((step, parts[1].decode(), struct.unpack("<f", parts[2])[0]))
    return out


class EventFileWriter:
    """Appends Events to `<dir>/events.out.tfevents.<int time>.<hostname>` (a new file per writer)."""

    def __init__(self, log_dir: str | os.PathLike):
        log_dir = Path(log_dir)
        log_dir.mkdir(parents=True, exist_ok=True)
        base = log_dir / f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}"
        path, n = base, 0
        while path.exists():  # two writers within one second (a quick resume): keep both files
            n += 1
            path = base.with_name(f"{base.name}.{n}")
        self.path = path
        self._file = open(path, "ab")
        self.write(encode_event(0, time.time(), file_version="brain.Event:2"))

    def write(self, event: bytes) -> None:
        self._file.write(tfrecord(event))
        self._file.flush()

    def close(self) -> None:
        self._file.close()


# ============================================================================ the logger
class RunLogger:
    """Scalars to `out_dir/log.csv` (long format) and TensorBoard events in `out_dir/tb/`.

    `enabled=False` (non-zero ranks): no file is created and every method does nothing.
    """

    def __init__(self, out_dir, enabled: bool = True):
        self.out_dir = Path(out_dir)
        self.enabled = enabled
        self.csv_path = self.out_dir / "log.csv"
        self._csv = None
        self._tb: EventFileWriter | None = None
        if enabled:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self._check_existing_csv()

    # ---- files, opened lazily so a run that logs nothing leaves nothing -------------------------
    def _check_existing_csv(self) -> None:
        if not self.csv_path.exists() or self.csv_path.stat().st_size == 0:
            return
        with open(self.csv_path, newline="") as f:
            header = next(csv.reader(f), None)
        if header != CSV_HEADER:
            raise ValueError(f"{self.csv_path} exists with header {header}, expected {CSV_HEADER}: "
                             "not a RunLogger file; use another output directory")

    def _csv_file(self):
        if self._csv is None:
            new = not self.csv_path.exists() or self.csv_path.stat().st_size == 0
            self._csv = open(self.csv_path, "a", newline="")
            if new:
                csv.writer(self._csv).writerow(CSV_HEADER)
        return self._csv

    def _tb_writer(self) -> EventFileWriter:
        if self._tb is None:
            self._tb = EventFileWriter(self.out_dir / "tb")
        return self._tb

    # ---- API ------------------------------------------------------------------------------------
    def log(self, step: int, split: str = "train", **scalars: float) -> None:
        """Append scalars (floats or 0-d tensors) for `step`; tags `<split>/<name>` in TensorBoard."""
        if not self.enabled or not scalars:
            return
        for name in (split, *scalars):
            if not name or any(c in name for c in ',\n\r"'):
                raise ValueError(f"metric/split name {name!r} must be non-empty without commas, quotes or newlines")
        values = {name: float(v.item() if hasattr(v, "item") else v) for name, v in scalars.items()}
        now = time.time()
        f = self._csv_file()
        writer = csv.writer(f)
        for name, v in values.items():
            writer.writerow([int(step), split, name, repr(v), f"{now:.3f}"])
        f.flush()
        self._tb_writer().write(encode_event(int(step), now, {f"{split}/{k}": v for k, v in values.items()}))

    def truncate_after(self, step: int) -> None:
        """Drop everything logged after `step` (the tail of a crashed run that resumes from `step`)."""
        if not self.enabled:
            return
        if self._csv is not None:
            self._csv.close()
            self._csv = None
        rows, torn = _read_rows(self.csv_path) if self.csv_path.exists() else ([], False)
        kept = [r for r in rows if r["step"] <= step]
        if len(kept) != len(rows) or torn:
            with atomic_path(self.csv_path) as tmp:
                with open(tmp, "w", newline="") as f:
                    w = csv.writer(f)
                    w.writerow(CSV_HEADER)
                    for r in kept:
                        w.writerow([r["step"], r["split"], r["name"], repr(r["value"]), f"{r['wall_time']:.3f}"])
        # TensorBoard drops all earlier events with step >= a SessionLog START's step
        self._tb_writer().write(encode_event(int(step) + 1, time.time(), session_start=True))

    def plot(self, path=None) -> Path:
        """Training curves as a PNG (default `out_dir/curves.png`); returns its path."""
        path = Path(path) if path is not None else self.out_dir / "curves.png"
        if not self.enabled:
            return path
        if self._csv is not None:
            self._csv.flush()
        rows = read_log(self.csv_path) if self.csv_path.exists() else []
        img = draw_curves(rows, title=f"training curves: {self.out_dir.name}")
        with atomic_path(path) as tmp:
            img.save(tmp, format="PNG")
        return path

    def close(self) -> None:
        if self._csv is not None:
            self._csv.close()
            self._csv = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_log(path: str | os.PathLike) -> list[dict]:
    """Rows of a RunLogger CSV as dicts: step (int), split, name, value (float), wall_time (float)."""
    return _read_rows(path)[0]


def _read_rows(path) -> tuple[list[dict], bool]:
    """(rows, torn?): a line a kill cut short (too few fields, an empty or half-written number, no final
    newline) is left out and reported, so a resumed run can rewrite the file without it."""
    rows, torn = [], False
    with open(path, newline="") as f:
        text = f.read()
    if text and not text.endswith("\n"):
        torn = True
    reader = csv.reader(text.splitlines())
    header = next(reader, None)
    if header is None:
        return rows, torn
    if header != CSV_HEADER:
        raise ValueError(f"{path}: header {header} is not the RunLogger header {CSV_HEADER}")
    lines = list(reader)
    for i, line in enumerate(lines):
        try:
            step, split, name, value, wall = line
            row = {"step": int(step), "split": split, "name": name, "value": float(value), "wall_time": float(wall)}
        except ValueError:
            torn = True
            continue
        if torn and i == len(lines) - 1 and not text.endswith("\n"):
            continue          # a last line without its newline may have lost digits
        rows.append(row)
    return rows, torn


# ============================================================================ curves with PIL
PANEL_W, PANEL_H = 380, 250
MARGIN_L, MARGIN_R, MARGIN_T, MARGIN_B = 62, 14, 28, 34
SPLIT_COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About `n` round tick values covering [lo, hi] (steps of 1, 2, 2.5 or 5 times a power of ten)."""
    if not hi > lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks, k = [], 0
    while first + k * step <= hi + step * 1e-9:
        ticks.append(first + k * step)
        k += 1
    return ticks


def _fmt_step(v: float) -> str:
    if abs(v) >= 1000 and v == int(v):
        return f"{v / 1000:g}k"
    return f"{v:g}"


def _series(rows: list[dict]) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """name -> split -> sorted [(step, value)], finite values only; the last value wins per step."""
    by = defaultdict(lambda: defaultdict(dict))
    for r in rows:
        if math.isfinite(r["value"]):
            by[r["name"]][r["split"]][r["step"]] = r["value"]
    return {name: {s: sorted(pts.items()) for s, pts in splits.items()} for name, splits in by.items()}


def _split_colours(rows: list[dict]) -> dict[str, tuple[int, int, int]]:
    splits = sorted({r["split"] for r in rows}, key=lambda s: ({"train": 0, "val": 1}.get(s, 2), s))
    return {s: SPLIT_COLOURS[i % len(SPLIT_COLOURS)] for i, s in enumerate(splits)}


def draw_curves(rows: list[dict], title: str = "training curves", cols: int = 3, x_label: str = "step") -> Image.Image:
    """One panel per metric name, one coloured line per split, x = step (x_label names it on the axis)."""
    font = ImageFont.load_default()
    series = _series(rows)
    colours = _split_colours(rows)
    names = sorted(series)
    cols = max(1, min(cols, len(names)))
    nrows = max(1, math.ceil(len(names) / cols))
    header = 24
    img = Image.new("RGB", (cols * PANEL_W, header + nrows * PANEL_H), "white")
    draw = ImageDraw.Draw(img)
    draw.text((8, 6), title, fill="black", font=font)
    if not names:
        draw.text((8, header + 10), "no data logged yet", fill=(120, 120, 120), font=font)
        return img
    for i, name in enumerate(names):
        r, c = divmod(i, cols)
        _draw_panel(draw, font, c * PANEL_W, header + r * PANEL_H, name, series[name], colours, x_label)
    return img


def _draw_panel(draw, font, x0: int, y0: int, name: str, splits: dict, colours: dict, x_label: str) -> None:
    left, top = x0 + MARGIN_L, y0 + MARGIN_T
    right, bottom = x0 + PANEL_W - MARGIN_R, y0 + PANEL_H - MARGIN_B
    steps = [s for pts in splits.values() for s, _ in pts]
    values = [v for pts in splits.values() for _, v in pts]
    xlo, xhi = min(steps), max(steps)
    ylo, yhi = min(values), max(values)
    if xhi == xlo:
        xlo, xhi = xlo - 1, xhi + 1
    pad = (yhi - ylo) * 0.05 or max(abs(yhi) * 0.05, 1e-3)  # flat series: give it some height
    ylo, yhi = ylo - pad, yhi + pad

    def px(step, value):
        return (left + (step - xlo) / (xhi - xlo) * (right - left),
                bottom - (value - ylo) / (yhi - ylo) * (bottom - top))

    # title, axes, ticks with labels and light grid lines
    draw.text((left, y0 + 8), name, fill="black", font=font)
    for t in nice_ticks(ylo, yhi):
        y = px(xlo, t)[1]
        draw.line([(left, y), (right, y)], fill=(232, 232, 232))
        draw.line([(left - 4, y), (left, y)], fill="black")
        label = f"{t:.4g}"
        w = draw.textlength(label, font=font)
        draw.text((left - 6 - w, y - 6), label, fill="black", font=font)
    for t in nice_ticks(xlo, xhi):
        x = px(t, ylo)[0]
        draw.line([(x, bottom), (x, bottom + 4)], fill="black")
        label = _fmt_step(t)
        draw.text((x - draw.textlength(label, font=font) / 2, bottom + 6), label, fill="black", font=font)
    draw.text((right - draw.textlength(x_label, font=font), bottom + 19), x_label, fill=(90, 90, 90), font=font)
    draw.rectangle([left, top, right, bottom], outline="black")

    # one line per split; markers where points are sparse (validation)
    lx = right
    for split in sorted(splits, key=lambda s: list(colours).index(s), reverse=True):
        pts = [px(s, v) for s, v in splits[split]]
        colour = colours[split]
        if len(pts) > 1:
            draw.line(pts, fill=colour, width=2)
        if len(pts) <= 60:
            for x, y in pts:
                draw.ellipse([x - 2.5, y - 2.5, x + 2.5, y + 2.5], fill=colour)
        # legend entry, right-aligned in the title line
        lx -= draw.textlength(split, font=font) + 4
        draw.text((lx, y0 + 8), split, fill=colour, font=font)
        lx -= 14
        draw.rectangle([lx, y0 + 11, lx + 9, y0 + 18], fill=colour)
        lx -= 8
