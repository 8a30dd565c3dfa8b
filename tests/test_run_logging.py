"""RunLogger: long-format CSV, hand-written TensorBoard event files (TFRecord + Event protobuf), curves."""
import csv
import importlib.util
import struct

import numpy as np
import pytest
from PIL import Image

from mambagen.train.logging import (CSV_HEADER, RunLogger, _parse_message, crc32c, masked_crc32c, nice_ticks,
                                    read_events, read_log, read_records, tfrecord)


def event_files(run_dir):
    return sorted((run_dir / "tb").glob("events.out.tfevents.*"))


# ---- TFRecord ----------------------------------------------------------------------------------

def test_crc32c_known_vectors():
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0
    assert crc32c(bytes(32)) == 0x8A9136AA  # RFC 3720 (iSCSI) test vectors
    assert crc32c(b"\xff" * 32) == 0x62A8AB43
    assert crc32c(bytes(range(32))) == 0x46DD794E


def test_masked_crc_and_record_layout():
    crc = crc32c(b"abc")
    assert masked_crc32c(b"abc") == ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF
    rec = tfrecord(b"hello")
    assert len(rec) == 8 + 4 + 5 + 4
    assert struct.unpack("<Q", rec[:8])[0] == 5
    assert struct.unpack("<I", rec[8:12])[0] == masked_crc32c(rec[:8])
    assert rec[12:17] == b"hello"
    assert struct.unpack("<I", rec[17:])[0] == masked_crc32c(b"hello")


def test_events_round_trip(tmp_path):
    logger = RunLogger(tmp_path)
    logger.log(1, "train", loss=0.5, lr=1e-4)
    logger.log(2, "train", loss=0.25)
    logger.log(2, "val", psnr=21.5)
    logger.close()
    (path,) = event_files(tmp_path)
    assert path.name.startswith("events.out.tfevents.")
    records = read_records(path)
    first = {f: v for f, _, v in _parse_message(records[0])}
    assert first[3] == b"brain.Event:2"  # file_version in the first event
    assert struct.unpack("<d", first[1])[0] > 1e9  # wall_time (double)
    got = read_events(path)
    assert [(s, t) for s, t, _ in got] == [(1, "train/loss"), (1, "train/lr"), (2, "train/loss"), (2, "val/psnr")]
    assert got[0][2] == pytest.approx(0.5) and got[1][2] == pytest.approx(1e-4, rel=1e-6)
    assert got[3][2] == pytest.approx(21.5)


def test_corrupt_event_file_is_detected(tmp_path):
    logger = RunLogger(tmp_path)
    logger.log(3, "train", loss=1.0)
    logger.close()
    (path,) = event_files(tmp_path)
    raw = bytearray(path.read_bytes())
    raw[-6] ^= 0xFF  # flip a byte of the last record's data
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="bad data CRC"):
        read_events(path)


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="tensorboard not installed")
def test_tensorboard_reads_our_files(tmp_path):  # pragma: no cover - only where tensorboard exists
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = RunLogger(tmp_path)
    for step in range(1, 6):
        logger.log(step, "train", loss=1.0 / step)
    logger.close()
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    scalars = acc.Scalars("train/loss")
    assert [s.step for s in scalars] == [1, 2, 3, 4, 5]
    assert scalars[-1].value == pytest.approx(0.2)
    # a resume from step 3 purges the old steps 4 and 5
    logger = RunLogger(tmp_path)
    logger.truncate_after(3)
    logger.log(4, "train", loss=40.0)
    logger.close()
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert [(s.step, s.value) for s in acc.Scalars("train/loss")] == [(1, 1.0), (2, 0.5), (3, pytest.approx(1 / 3)),
                                                                      (4, 40.0)]


# ---- CSV ------------------------------------------------------------------------------------------

def test_csv_long_format_accepts_new_metrics(tmp_path):
    logger = RunLogger(tmp_path)
    logger.log(10, loss=1.0)
    logger.log(20, "train", loss=0.5, d_loss=0.9)  # a metric that appears later
    logger.close()
    with open(tmp_path / "log.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == CSV_HEADER == ["step", "split", "name", "value", "wall_time"]
    assert [r[:4] for r in rows[1:]] == [["10", "train", "loss", "1.0"], ["20", "train", "loss", "0.5"],
                                         ["20", "train", "d_loss", "0.9"]]
    # appending (a resumed run) keeps one header
    with RunLogger(tmp_path) as logger:
        logger.log(30, loss=0.25)
    assert [r["step"] for r in read_log(tmp_path / "log.csv")] == [10, 20, 20, 30]


def test_truncate_after_drops_the_crashed_tail(tmp_path):
    logger = RunLogger(tmp_path)
    for step in range(1, 9):
        logger.log(step, loss=float(step))
    logger.close()
    # the run crashed after step 8; it resumes from its checkpoint at step 5
    logger = RunLogger(tmp_path)
    logger.truncate_after(5)
    for step in range(6, 9):
        logger.log(step, loss=10.0 * step)
    logger.close()
    rows = read_log(tmp_path / "log.csv")
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert [r["value"] for r in rows][-3:] == [60.0, 70.0, 80.0]
    # the resumed events file starts with a SessionLog START at step 6: TensorBoard purges >= 6 from before
    first, second = event_files(tmp_path)
    start = [dict((f, v) for f, _, v in _parse_message(r)) for r in read_records(second)][1]
    assert start[2] == 6 and _parse_message(start[7]) == [(1, 0, 1)]  # Event.session_log {status: START}
    assert [s for s, _, _ in read_events(second)] == [6, 7, 8]


def test_disabled_logger_writes_nothing(tmp_path):
    logger = RunLogger(tmp_path / "rank1", enabled=False)
    logger.log(1, loss=1.0)
    logger.truncate_after(0)
    assert logger.plot() == tmp_path / "rank1" / "curves.png"
    logger.close()
    assert not (tmp_path / "rank1").exists()


def test_bad_names_and_foreign_csv_are_clear_errors(tmp_path):
    logger = RunLogger(tmp_path)
    with pytest.raises(ValueError, match="without commas"):
        logger.log(1, **{"a,b": 1.0})
    logger.close()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "log.csv").write_text("step,loss\n1,2\n")
    with pytest.raises(ValueError, match="not a RunLogger file"):
        RunLogger(tmp_path / "other")


# ---- curves ---------------------------------------------------------------------------------------

def test_plot_draws_one_panel_per_metric_with_split_colours(tmp_path):
    logger = RunLogger(tmp_path)
    for step in range(0, 200, 10):
        logger.log(step, "train", loss=1.0 / (1 + step), lr=1e-4)
    for step in (50, 100, 150):
        logger.log(step, "val", loss=0.5 / (1 + step), psnr=20 + step / 50)
    path = logger.plot()
    logger.close()
    assert path == tmp_path / "curves.png"
    img = np.asarray(Image.open(path).convert("RGB"))
    assert img.shape[1] == 3 * 380 and img.shape[0] > 250  # 3 metrics -> one row of 3 panels
    colours = {tuple(c) for c in img.reshape(-1, 3)}
    assert (31, 119, 180) in colours and (255, 127, 14) in colours  # train blue, val orange
    assert (img < 60).all(axis=2).sum() > 500  # black axes, ticks and labels


def test_plot_of_empty_log_and_custom_path(tmp_path):
    logger = RunLogger(tmp_path)
    out = logger.plot(tmp_path / "sub" / "c.png")
    assert out.exists() and Image.open(out).size[0] > 0


def test_nice_ticks():
    assert nice_ticks(0, 1) == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert nice_ticks(3, 97)[0] >= 3 and nice_ticks(3, 97)[-1] <= 97
    assert nice_ticks(2.0, 2.0) == [2.0]
