"""The benchmark harness runs every case it lists on a small file, in one process and in fresh ones."""
from __future__ import annotations

import pytest

from warpload import bench
from warpload.synthetic import GPT2Shape, write_gpt2_checkpoint

TINY = GPT2Shape(n_layer=2, n_embd=64, n_positions=32, vocab_size=100)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_gpt2_checkpoint(str(tmp_path_factory.mktemp("tiny")), TINY)


@pytest.mark.parametrize("fresh_process", [False, True], ids=["same-process", "fresh-process"])
def test_every_case_runs_and_is_reported(checkpoint, fresh_process):
    settings = bench.Settings(repeat=1, fresh_process=fresh_process, progress=lambda line: None)
    report = bench.run_benchmark(checkpoint, peers=["safetensors", "torch-load"], settings=settings)

    failed = [(t.case, t.cache, t.skipped) for t in report.timings if t.skipped]
    assert failed == []
    cases = {(t.case, t.cache) for t in report.timings}
    for loader in ["warpload", "warpload, same weights as .bin", bench.SAFETENSORS_COPY, bench.TORCH_LOAD]:
        assert {(loader, "warm"), (loader, "cold")} <= cases
    assert all(len(t.seconds) == 1 and t.seconds[0] > 0 for t in report.timings)
    table = bench.format_report(report, markdown=True)
    assert "| warpload, same weights as .bin | cold |" in table


def test_unknown_case_name_is_refused(checkpoint):
    with pytest.raises(KeyError, match="no benchmark case"):
        bench.case_named("not a case", checkpoint)
