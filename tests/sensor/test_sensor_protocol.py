import json
import math

import numpy as np
import pytest

from gateway.sensor.protocol import DEFAULT_LIMITS, Limits, Pong, SensorProtocolError, decode
from scoring.events import EVENT_DTYPE, Focus, Kind, Source, Stimulus
from scoring.keys import KeyClass

ORIGIN = 1_763_700_000_000.5
NOW = ORIGIN + 10_000.0


def msg(events, seq=1, **extra):
    return json.dumps({"v": 1, "s": seq, "o": ORIGIN, "e": events, **extra})


def dec(message, **kw):
    return decode(message, session_id="sid-1", page="page-1", now_ms=NOW, **kw)


def test_batch_of_every_kind():
    events = [
        [1, 100.0, 2],
        [2, 180.5, 2],
        [3, 200, 10, 20],
        [4, 210, 11, 21, 1],
        [5, 290, 11, 21, 1],
        [6, 300, 12, 22, -120],
        [7, 50, 1],
        [7, 400, 1, 1],
        [10, 500, 4],
    ]
    d = dec(msg(events, seq=7, d=3, u=2).encode())
    ev = d.events
    assert ev.dtype == EVENT_DTYPE
    assert d.seq == 7 and d.dropped == 3 and d.untrusted == 2 and d.time_origin == ORIGIN
    assert d.session_id == "sid-1" and d.page == "page-1"
    assert d.problems == [] and d.pongs == []
    assert list(ev["kind"]) == [1, 2, 3, 4, 5, 6, 7, 7, 10]
    np.testing.assert_allclose(ev["t_src"], ORIGIN + np.array([100, 180.5, 200, 210, 290, 300, 50, 400, 500]))
    assert (ev["t_arr"] == NOW).all()
    assert (ev["source"] == Source.SENSOR).all()
    assert ev["key"][0] == KeyClass.LEFT_HOME and ev["key"][1] == KeyClass.LEFT_HOME
    assert math.isnan(ev["x"][0]) and ev["x"][2] == 10 and ev["y"][2] == 20
    assert ev["detail"][3] == 1 and ev["value"][5] == -120
    assert ev["detail"][6] == Stimulus.PAGE_READY and ev["value"][7] == 1
    assert ev["detail"][8] == Focus.HIDDEN
    assert d.n_keys == 1


def test_pong():
    d = dec('{"pong":42,"t":1234.5}')
    assert d.seq is None and len(d.events) == 0
    assert d.pongs == [Pong(42, 1234.5)]


def test_empty_batch_is_fine():
    d = dec(msg([]))
    assert len(d.events) == 0 and d.seq == 1


@pytest.mark.parametrize(
    "message, reason",
    [
        (b"\xff\xfe garbage", "not_utf8"),
        ("not json", "not_json"),
        ("[1,2,3]", "bad_shape"),
        ('{"v":1,"s":1,"o":1e12,"e":[],"x":1}', "bad_shape"),
        ('{"v":1,"s":1,"e":[]}', "bad_shape"),
        ('{"v":2,"s":1,"o":1.7e12,"e":[]}', "bad_version"),
        ('{"v":true,"s":1,"o":1.7e12,"e":[]}', "bad_version"),
        ('{"v":1,"s":0,"o":1.7e12,"e":[]}', "bad_value"),
        ('{"v":1,"s":"1","o":1.7e12,"e":[]}', "bad_value"),
        ('{"v":1,"s":1.5,"o":1.7e12,"e":[]}', "bad_value"),
        ('{"v":1,"s":1,"o":5,"e":[]}', "bad_value"),
        ('{"v":1,"s":1,"o":1.7e12,"e":{}}', "bad_shape"),
        ('{"v":1,"s":1,"o":1.7e12,"e":[], "d":-1}', "bad_value"),
        ('{"v":1,"s":1,"o":NaN,"e":[]}', "not_json"),
        ('{"v":1,"s":1,"o":1e999,"e":[]}', "bad_value"),
        ('{"v":1,"s":1,"o":1.7e12,"e":[[1,Infinity,2]]}', "not_json"),
        ('{"v":1,"s":1,"o":1.7e12,"e":[[1,-5,2]]}', "bad_value"),
        ('{"v":1,"s":1,"o":1.7e12,"e":[[1,5]]}', "bad_event"),
        ('{"v":1,"s":1,"o":1.7e12,"e":[[1,5,16]]}', "bad_value"),
        ('{"v":1,"s":1,"o":1.7e12,"e":[[1,5,"KeyA"]]}', "bad_value"),
        ('{"v":1,"s":1,"o":1.7e12,"e":[[1,5,2,3]]}', "bad_event"),
        ('{"v":1,"s":1,"o":1.7e12,"e":[[8,5,2]]}', "bad_event"),
        ('{"v":1,"s":1,"o":1.7e12,"e":[[9,5,2]]}', "bad_event"),
        ('{"v":1,"s":1,"o":1.7e12,"e":[[true,5,2]]}', "bad_event"),
        ('{"v":1,"s":1,"o":1.7e12,"e":[[3,5,"a",1]]}', "bad_value"),
        ('{"v":1,"s":1,"o":1.7e12,"e":[[3,5,1e7,1]]}', "bad_value"),
        ('{"v":1,"s":1,"o":1.7e12,"e":[[4,5,1,1,256]]}', "bad_value"),
        ('{"v":1,"s":1,"o":1.7e12,"e":[[7,5,99]]}', "bad_value"),
        ('{"v":1,"s":1,"o":1.7e12,"e":[[10,5,0]]}', "bad_value"),
        ('{"v":1,"s":1,"o":1.7e12,"e":["x"]}', "bad_event"),
        ('{"pong":1}', "bad_shape"),
        ('{"pong":-1,"t":1}', "bad_value"),
        ('{"pong":1,"t":1,"extra":1}', "bad_shape"),
        ("[" * 32000 + "]" * 32000, "not_json"),
        ('{"v":1,"s":1,"o":1.7e12,"e":[],"d":' + "9" * 4301 + "}", "not_json"),  # past int()'s digit limit
    ],
)
def test_garbage_is_refused_with_a_reason(message, reason):
    with pytest.raises(SensorProtocolError) as info:
        dec(message)
    assert info.value.reason == reason
    assert reason in str(info.value)


def test_oversized_messages_are_refused_before_parsing():
    big = msg([[3, i, 1, 1] for i in range(5000)])
    assert len(big) > DEFAULT_LIMITS.max_message_bytes
    for message in (big, big.encode()):
        with pytest.raises(SensorProtocolError) as info:
            dec(message)
        assert info.value.reason == "oversized"


def test_too_many_events():
    limits = Limits(max_events=10)
    with pytest.raises(SensorProtocolError) as info:
        dec(msg([[3, i, 1, 1] for i in range(11)]), limits=limits)
    assert info.value.reason == "too_many_events"
    assert len(dec(msg([[3, i, 1, 1] for i in range(10)]), limits=limits).events) == 10


def test_events_far_behind_are_dropped_and_reported_rest_kept():
    d = dec(msg([[1, 5000, 1], [2, 5050, 1], [1, 1000, 2], [2, 4900, 2]]))
    assert list(d.events["t_src"] - ORIGIN) == [5000, 5050, 4900]
    assert len(d.problems) == 1 and "1 event" in d.problems[0]


def test_clock_skew_is_a_problem_not_an_error():
    d = decode(msg([[1, 5, 1]]), session_id="s", page="p", now_ms=ORIGIN + 3 * 24 * 3600e3)
    assert len(d.events) == 1
    assert any("clock" in p for p in d.problems)


def test_limits_are_validated():
    with pytest.raises(ValueError):
        Limits(max_events=0)
    with pytest.raises(ValueError):
        Limits(max_backstep_ms=float("nan"))


def test_wrong_input_type():
    with pytest.raises(SensorProtocolError):
        dec(12345)  # type: ignore[arg-type]


def test_decoded_events_carry_no_characters():
    # The dtype has no field that could hold text: every column is numeric.
    assert all(EVENT_DTYPE[name].kind in "fu" for name in EVENT_DTYPE.names)
    assert Kind.KEY_DOWN == 1
