import json

import numpy as np

from scoring.eval import cli
from scoring.eval.common import eer


def test_eer_basics():
    assert eer(np.array([1.0, 2.0, 3.0]), np.array([-1.0, -2.0])) == 0.0
    assert abs(eer(np.array([0.0, 1.0]), np.array([0.0, 1.0])) - 0.5) < 1e-9


def test_cmu_reproduces_scaled_manhattan(datasets, capsys):
    rc = cli.main(["cmu", "--data", str(datasets / "cmu-strong-password"), "--json", "--no-progress"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert abs(out["detectors"]["scaled-manhattan"]["mean_eer"] - 0.096) < 0.001
    assert "mean_eer" in out and "sd_eer" in out


def test_freetext_small_subset(datasets, capsys, tmp_path):
    md = tmp_path / "results.md"
    md.write_text("# r\n\n## Other section\n\nkeep me\n")
    rc = cli.main(["freetext", "--data", str(datasets / "aalto-desktop"), "--limit", "40", "--json", "--no-progress", "--out", str(md)])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["dataset"] == "aalto-desktop"
    windows = {e["window"] for e in out["results"] if e["mode"] == "verification"}
    assert windows == {50, 100, 200}
    text = md.read_text()
    assert "keep me" in text and "## Free text: Aalto" in text


def test_missing_data_is_a_clear_error(tmp_path, capsys):
    assert cli.main(["cmu", "--data", str(tmp_path / "nope")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_no_aalto_test_user_types_regularly_enough_to_be_stepped_up_as_a_script(datasets):
    """The `regular` floor is a quantile over training users of the lowest window CV of their typing, because the
    detector keeps a session's lowest CV and the gateway's small batches check nearly every window. Test users'
    sessions, judged the same way, must stay under the step-up score (policies/defaults/behaviour.yaml: 0.8)."""
    from scoring.detectors.automation import CV_WINDOW, regular
    from scoring.eval.aalto import load_users, split_users
    from scoring.eval.common import SPLIT_SEED, lowest_window_cv, sentence_keystrokes
    from scoring.population import shipped_population

    floor = shipped_population().flight_cv_floor
    _, test = split_users(load_users(datasets / "aalto-desktop"), SPLIT_SEED)
    worst = 0.0
    for u in test:
        fl = np.concatenate([sentence_keystrokes(s).flight_ms for s in u.sentences])
        if len(fl) >= CV_WINDOW:
            worst = max(worst, regular(lowest_window_cv(fl), floor))
    assert len(test) > 800
    assert worst < 0.8
