"""scripts/soak.py (many concurrent calls at batch 1, every output bit for bit the first one's, RSS flat) at tiny
settings: its report on sepp's paths, and that it reports what it is there to catch: outputs that change, calls that
raise, memory that grows."""

from __future__ import annotations

import importlib.util
import itertools
import json
import mmap
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "soak.py"
FIELDS = ["calls", "threads", "mismatches", "errors", "rss_warm_mib", "rss_end_mib", "rss_peak_mib", "growth_mib"]
FIELDS += ["growth_pct", "wall_s", "calls_per_s"]


@pytest.fixture(scope="module")
def soak():
    spec = importlib.util.spec_from_file_location("sepp_soak_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_soak_of_every_path_finds_no_mismatch_and_reports_each_number(soak, tmp_path, capsys):
    out = tmp_path / "soak.json"
    intra = torch.get_num_threads()
    args = ["--model", "se_resnet18", "--image-size", "32", "--calls", "40", "--threads", "2", "--json", str(out)]
    rc = soak.main(args)
    assert torch.get_num_threads() == intra  # restored
    report = json.loads(out.read_text())
    assert rc == 0 and report["problems"] == [], report["problems"]
    assert report["schema"] == "sepp-soak/1" and report["model"] == "se_resnet18"
    assert list(report["results"]) == soak.PATHS
    for name in ["eager", "optimized", "cpp"]:
        r = report["results"][name]
        assert set(FIELDS) <= set(r), name
        assert (r["calls"], r["threads"], r["mismatches"], r["errors"]) == (40, 2, 0, 0), name
        assert r["rss_warm_mib"] > 0 and r["rss_peak_mib"] >= max(r["rss_warm_mib"], r["rss_end_mib"]), name
    exe = report["results"]["executable"]
    if "skipped" not in exe:  # sepp-bench installed: one caller, outputs not compared
        assert set(FIELDS) <= set(exe) and (exe["threads"], exe["mismatches"], exe["errors"]) == (1, None, 0)
    printed = capsys.readouterr().out
    assert "| eager | 40 | 2 | 0 | 0 |" in printed and "OK: every output equal to the first" in printed


def test_outputs_that_change_are_counted_and_named(soak):
    count = itertools.count()  # call 0 is the reference

    def flaky(x):
        return x.sum().reshape(1) + (1.0 if next(count) % 7 == 3 else 0.0)

    r = soak.soak(flaky, torch.ones(1, 3, 4, 4), calls=40, threads=2)
    assert (r["mismatches"], r["errors"]) == (6, 0)  # calls 3, 10, ..., 38
    assert r["first_mismatch"].endswith(": max |difference| 1") and r["first_error"] is None
    want = f"flaky: 6 of 40 outputs differ from the first ({r['first_mismatch']})"
    assert soak.problems("flaky", r, 5.0, 32.0) == [want]


def test_a_changed_shape_and_a_raising_call_are_reported(soak):
    count = itertools.count()

    def wrong(x):
        n = next(count)
        if n == 5:
            raise RuntimeError("boom")
        return x[:, :2] if n == 9 else x.clone()

    r = soak.soak(wrong, torch.ones(1, 3, 4, 4), calls=20, threads=2)
    assert (r["mismatches"], r["errors"]) == (1, 1)
    found = soak.problems("wrong", r, 5.0, 32.0)
    # The call numbers are the order the threads took the calls in, not always the order they made them.
    assert len(found) == 2
    assert found[0].startswith("wrong: 1 of 20 outputs differ from the first (call ")
    assert found[0].endswith(": got (1, 2, 4, 4) torch.float32, first call (1, 3, 4, 4) torch.float32)")
    assert found[1].startswith("wrong: 1 call(s) failed (call ") and found[1].endswith(": RuntimeError: boom)")


def test_memory_that_grows_after_the_warm_up_is_reported(soak):
    kept = []

    def leaky(x):
        # 1 MiB of fresh pages, written and kept (an anonymous mmap: malloc could reuse memory earlier tests freed)
        page = mmap.mmap(-1, 1 << 20)
        page.write(b"\1" * (1 << 20))
        kept.append(page)
        return x.clone()

    r = soak.soak(leaky, torch.ones(1, 3, 4, 4), calls=40, threads=2)  # 2 warm-up calls, then 38 MiB more
    assert (r["mismatches"], r["errors"]) == (0, 0)
    assert r["growth_mib"] > 20 and r["growth_pct"] > 0
    found = soak.problems("leaky", r, 0.0, 8.0)  # the limit in MiB alone (5% of a test process's RSS is more)
    assert len(found) == 1 and found[0].startswith("leaky: RSS grew") and "(limit 8.0 MiB)" in found[0]
    assert soak.problems("leaky", r, 0.0, 1024.0) == []


def test_bad_arguments_exit_2(soak):
    for args in (["--paths", "eager,gpu"], ["--calls", "0"], ["--image-size", "16"], ["--warmup-fraction", "1"]):
        with pytest.raises(SystemExit) as e:
            soak.parse_args(args)
        assert e.value.code == 2, args
