import gzip
from pathlib import Path

from gateway.sensor import build

HERE = Path(build.__file__).resolve().parent


def test_minified_sensor_is_built_from_the_current_source():
    minified = (HERE / "sensor.min.js").read_text()
    expected = build.source_digest((HERE / "sensor.js").read_bytes())
    assert build.built_from(minified) == expected, (
        "sensor.min.js is stale: run `.venv/bin/python -m gateway.sensor.build` (see gateway/sensor/build.py)"
    )


def test_minified_sensor_is_small():
    data = (HERE / "sensor.min.js").read_bytes()
    assert len(data) < 8 * 1024
    assert len(gzip.compress(data, 9)) < 4 * 1024
    assert b"data-ztgate-token" in data and b"sendBeacon" in data
