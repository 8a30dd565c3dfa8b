"""The benchmark harness: the image-size scaling runs (grids and position tables sized per image) and the
seeds' speed claims table. Timings themselves are never asserted (benchmarks, not tests)."""
import json

import pytest
import torch

from mambagen import bench
from mambagen.cli import main


def test_scaling_bench_sizes_each_model_to_the_image_and_plots(tmp_path):
    out = tmp_path / "b"
    assert main(["bench", "--generate", "aim-tiny:reference", "arpg-tiny:reference", "--decode", "--image-size", "64",
                 "128", "--batch", "2", "--repeat", "1", "--device", "cpu", "--precision", "fp32", "--out",
                 str(out)]) == 0
    records = json.loads(out.with_suffix(".json").read_text())["records"]
    got = sorted((r["model"], r["image_size"], r["tokens"]) for r in records)
    assert got == [("aim-tiny", 64, 16), ("aim-tiny", 128, 64), ("arpg-tiny", 64, 16), ("arpg-tiny", 128, 64)]
    assert all(r["us_per_token"] > 0 for r in records)
    assert (tmp_path / "b_scaling.png").stat().st_size > 1000 and "| scaling: model |" in out.with_suffix(".md").read_text()


def test_scaling_refuses_next_scale_models():
    with pytest.raises(ValueError, match="next-scale model"):
        bench._model("var-tiny", "cpu", None, image_size=512)


def _rec(model, path, batch, ips, peak=None):
    return {"kind": "generation", "model": model, "path": path, "batch": batch, "images_per_s": ips, "peak_gib": peak}


def test_claims_table_compares_the_fastest_path_of_each_side():
    rows = bench.claims_table([_rec("aim-l", "reference", 16, 10), _rec("aim-l", "fast", 16, 80),
                               _rec("gpt-l", "fast", 16, 40), _rec("mvar-d24", "graph", 16, 50),
                               _rec("var-d30", "graph", 16, 45), _rec("arpg-l", "graph", 64, 300, 2.0),
                               _rec("gpt-l", "fast", 64, 100, 10.0)])
    text = "\n".join(rows)
    assert "aim-l fast 80.0 vs gpt-l fast 40.0" in text and "2.00x (claim 1x)" in text
    assert "1.11x (claim 1.2x) | does not hold" in text                       # M-VAR-d24 vs VAR-d30
    assert "3.00x (claim 20x); memory 2.0 vs 10.0 GiB (80% less, claim > 75%) | does not hold" in text
    assert bench.claims_table([_rec("aim-l", "fast", 16, 80)]) == []          # one side missing: no row


@pytest.mark.parametrize("spec", ["aim-tiny:bogus", "aim-tiny:chunk0", "aim-tiny:compile:chunkX"])
def test_unknown_training_options_are_refused(spec, tmp_path, capsys):
    assert main(["bench", "--generate", "--decode", "--train", spec, "--device", "cpu", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "unknown option" in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "b.json").exists()


def test_training_record_names_the_scan_it_ran(tmp_path):
    """One CPU training step per setting: the record says which scan "auto" resolved to and whether the
    opt-in conv/norm kernels ran (never on CPU)."""
    recs = [bench.bench_training("aim-tiny", 2, "fp32", 1, torch.device("cpu"), scan=scan, kernels=True)
            for scan in ("auto", "fast")]
    assert [r["scan_fn"] for r in recs] == ["ssd_chunked", "ssd_chunked_recomputed"]
    assert not any(r["mamba2_kernels"] for r in recs) and all(r["tokens_per_s"] > 0 for r in recs)


def test_naming_one_kind_times_only_that_kind(monkeypatch, tmp_path):
    """`bench --train X` times training only (it once timed the default AiM-L generation too, minutes on a
    GPU call); with no kind named, the default generation and decode rows run."""
    from mambagen.cli import bench as cli_bench
    seen = []
    monkeypatch.setattr(cli_bench.bench, "run_bench", lambda a: seen.append((a.generate, a.decode, a.train)))
    out = ["--out", str(tmp_path / "b")]
    main(["bench", "--train", "aim-tiny"] + out)
    main(["bench"] + out)
    main(["bench", "--decode", "vq-tiny", "--generate"] + out)
    assert seen == [([], [], ["aim-tiny"]),
                    (list(cli_bench.DEFAULT_GENERATE), list(cli_bench.DEFAULT_DECODE), []),
                    ([], ["vq-tiny"], [])]


def test_kernel_registers_reads_ptxas_for_an_offline_sm90_build(tmp_path):
    """bench/kernel_registers.py compiles a scan kernel for sm_90a without a GPU and reads its registers and
    spills from ptxas: the carry kernel is small (no spills), and its registers bound its share of an SM."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    pytest.importorskip("triton")
    root = Path(__file__).parents[1]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}   # a real build, not the interpreter
    env["PYTHONPATH"] = str(root)
    run = subprocess.run([sys.executable, str(root / "bench" / "kernel_registers.py"), str(tmp_path / "r"), "--only",
                          "_carry_kernel"], capture_output=True, text=True, env=env)
    if run.returncode and "no ptxas" in run.stderr:
        pytest.skip("a Triton without the NVIDIA backend's ptxas")
    assert run.returncode == 0, run.stderr[-2000:]
    (row,) = json.loads((tmp_path / "r.json").read_text())["rows"]
    assert 16 <= row["registers"] <= 255 and row["spill_stores"] == 0
    assert row["programs_per_sm"] * row["warps"] == row["warps_per_sm"] <= 64
    assert "| `_carry_kernel` | carry |" in (tmp_path / "r.md").read_text()


def test_graph_breaks_counts_graphs_and_names_the_reasons(tmp_path, monkeypatch):
    """bench/graph_breaks.py: a compiled aim-tiny training forward is one graph; a query torch.compile cannot
    trace, put in the Mamba2 layer's path, shows up as breaks with their reason."""
    import importlib.util
    from pathlib import Path
    spec = importlib.util.spec_from_file_location("graph_breaks", Path(__file__).parents[1] / "bench" / "graph_breaks.py")
    gb = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gb)
    whole = gb.explain("aim-tiny", torch.device("cpu"))
    assert (whole["graphs"], whole["graph_breaks"], whole["reasons"]) == (1, 0, [])
    from mambagen.layers import mamba2
    scan = mamba2.Mamba2._scan
    monkeypatch.setattr(mamba2.Mamba2, "_scan", lambda self, n: (print("untraceable"), scan(self, n))[1])
    broken = gb.explain("aim-tiny", torch.device("cpu"))
    assert broken["graph_breaks"] >= 4 and broken["graphs"] > 1 and broken["reasons"]


def _result(path, device, records):
    path.write_text(json.dumps({"meta": {"device": device, "torch": "t", "command": f"bench {path.name}"},
                                "records": records, "errors": []}))
    return str(path)


def _scaled(model, size, us):
    return {**_rec(model, "fast", 16, 1.0, 1.5), "cfg": 1.5, "precision": "bf16", "seconds_per_batch": 1.0,
            "image_size": size, "tokens": (size // 16) ** 2, "us_per_token": us, "torch": "t"}


def test_merge_puts_runs_of_one_device_in_one_table_and_plot(tmp_path, capsys):
    """Scaling rows timed in separate device calls (one image size each) land in one table, sorted by model
    and size, and one plot (none for a single size); no timing runs. Runs of different GPUs are refused: not side by side."""
    a = _result(tmp_path / "a.json", "GPU X", [_scaled("gpt-l", 1024, 250.0), _scaled("aim-l", 1024, 107.0)])
    b = _result(tmp_path / "b.json", "GPU X", [_scaled("aim-l", 256, 106.0)])
    out = tmp_path / "m"
    assert main(["bench", "--merge", a, b, "--out", str(out)]) == 0
    merged = json.loads(out.with_suffix(".json").read_text())
    assert [(r["model"], r["image_size"]) for r in merged["records"]] == [("aim-l", 256), ("aim-l", 1024),
                                                                         ("gpt-l", 1024)]
    assert "a.json" in merged["meta"]["command"] and "b.json" in merged["meta"]["command"]
    md = out.with_suffix(".md").read_text()
    assert md.index("| aim-l | fast | 256 |") < md.index("| gpt-l | fast | 1024 |")
    assert (tmp_path / "m_scaling.png").stat().st_size > 1000
    assert main(["bench", "--merge", a, "--out", str(tmp_path / "one")]) == 0   # one size: a table, no curve
    assert (tmp_path / "one.md").exists() and not (tmp_path / "one_scaling.png").exists()
    c = _result(tmp_path / "c.json", "GPU Y", [_scaled("aim-l", 512, 106.0)])
    (tmp_path / "bad.json").write_text("not json")
    capsys.readouterr()
    (tmp_path / "no_meta.json").write_text(json.dumps({"records": []}))
    for files, why in (([a, c], "different devices"), ([a, str(tmp_path / "bad.json")], "bad.json: not a bench result"),
                       ([str(tmp_path / "no_meta.json")], "no_meta.json: not a bench result")):
        assert main(["bench", "--merge", *files, "--out", str(tmp_path / "n")]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and why in err
    assert not (tmp_path / "n.json").exists()
