"""Smoke test of the benchmark: it runs and writes the documented records."""
import json

from bench.sparse_conv import get_args_parser, main


def test_layer_bench_writes_records(tmp_path):
    out = tmp_path / "bench.json"
    main(get_args_parser().parse_args(["--scope", "layers", "--N", "4", "--p", "0.5", "--threads", "1",
                                       "--rounds", "1", "--json", str(out)]))
    records = json.loads(out.read_text())
    assert len(records) == 19  # MobileNetV2's distinct pruned 1x1 shapes at 224 px
    assert set(records[0]) >= {"scope", "arch", "N", "p", "threads", "dense_ms", "sparse_ms", "speedup",
                               "baseline", "blas_ms"}
    assert all(r["scope"] == "layers" and r["sparse_ms"] > 0 for r in records)
