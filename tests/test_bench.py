"""The benchmark harness: every case runs on a small file, the table's ratios are the timings', fresh runs work."""
from __future__ import annotations

import pytest

from warpload.bench import harness as bench
from warpload.bench.synthetic import GPT2Shape, write_gpt2_checkpoint

TINY = GPT2Shape(n_layer=2, n_embd=64, n_positions=32, vocab_size=100)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_gpt2_checkpoint(str(tmp_path_factory.mktemp("tiny")), TINY)


def test_every_case_runs_and_is_reported(checkpoint):
    settings = bench.Settings(repeat=1, progress=lambda line: None)
    report = bench.run_benchmark(checkpoint, peers=["safetensors", "torch-load"], settings=settings)

    failed = [(t.case, t.cache, t.skipped) for t in report.timings if t.skipped]
    assert failed == []
    cases = {(t.case, t.cache) for t in report.timings}
    for loader in ["warpload", "warpload, same weights as .bin", bench.SAFETENSORS_COPY, bench.TORCH_LOAD,
                   bench.READ_LIMIT]:
        assert {(loader, "warm"), (loader, "cold")} <= cases
    table = bench.format_report(report, markdown=True)
    assert "| warpload, same weights as .bin | cold |" in table


def timing(case: str, cache: str, *seconds: float) -> bench.Timing:
    return bench.Timing(case, cache, list(seconds))


def test_table_shows_medians_and_ratios_to_the_peers_and_the_read_limit():
    timings = [
        timing("warpload", "warm", 0.1, 0.3, 0.2),
        timing(bench.SAFETENSORS_COPY, "warm", 0.4, 0.4, 0.5),
        timing(bench.TORCH_LOAD, "warm", 0.8),
        timing(bench.READ_LIMIT, "warm", 0.1),
        bench.Timing("fastsafetensors", "warm", skipped="ImportError: not installed"),
    ]
    report = bench.Report("x.safetensors", 10**9, bench.Settings(repeat=3), timings, [], {}, {})
    rows = {row[0]: row for row in bench.table_rows(report)}

    assert rows["warpload"] == ("warpload", "warm", "0.200", "0.100", "5.00", "2.00x", "4.00x", "50%")
    assert rows[bench.SAFETENSORS_COPY][5:] == ("1.00x", "2.00x", "25%")
    assert rows["fastsafetensors"][2] == "skipped"
    assert "skipped: fastsafetensors (warm): ImportError: not installed" in bench.format_report(report)


def test_a_case_runs_in_a_fresh_process(checkpoint):
    seconds = bench.time_in_fresh_process(bench.case_named("warpload", checkpoint), checkpoint)
    assert 0 < seconds < 60


def test_a_case_that_fails_in_its_process_says_why(checkpoint):
    with pytest.raises(RuntimeError, match="no benchmark case"):
        bench.time_in_fresh_process(bench.Case("not a case", lambda: None, None), checkpoint)


def test_unknown_case_name_is_refused(checkpoint):
    with pytest.raises(KeyError, match="no benchmark case"):
        bench.case_named("not a case", checkpoint)
