import json

from bench import scoring as bench


def test_bench_runs_and_reports(capsys):
    assert bench.main(["--json", "--events", "20000", "--no-write"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["offline"]["events_per_second"] > 0
    assert out["online"]["state_bytes"] > 0
