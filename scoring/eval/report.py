"""Markdown tables for docs/results.md from evaluation results."""

from __future__ import annotations


def _f(v, digits=3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def goals_table(rows) -> list[str]:
    """rows: (goal, target, measured, met) -> a markdown table, generated from the measured numbers."""
    out = ["", "Goals:", "", "| goal | target | measured | met? |", "|---|---|---|---|"]
    out += [f"| {g} | {t} | {m} | {'yes' if ok else 'no'} |" for g, t, m, ok in rows]
    return out


def markdown(protocol: str, r: dict) -> str:
    lines = []
    if protocol == "cmu":
        lines += [
            f"Killourhy-Maxion protocol, {r['results'][0]['subjects']} subjects, run in {r.get('seconds', '?')} s. "
            "Goal for ztgate's cadence detector: mean EER <= 0.05; the scaled-Manhattan reimplementation must give 0.096.",
            "",
            "| detector | mean EER | sd |",
            "|---|---|---|",
        ]
        for e in r["results"]:
            lines.append(f"| {e['detector']} | {_f(e['mean_eer'], 4)} | {_f(e['sd_eer'], 4)} |")
        lines += [
            "",
            "`cadence-fixed-text`: ztgate's cadence model on the 31 fixed-text timings (median/MAD scale over the "
            "100 most recent training typings, mean squared clipped z; settings chosen on subjects 1-25). `cadence-online`: the online detector as it runs in a session, with coarse key classes only "
            "(the password's keys share classes) against the shipped Aalto population.",
        ]
        d = {e["detector"]: e for e in r["results"]}
        lines += goals_table([
            ("scaled-Manhattan reimplementation reproduces the published EER", "0.096", _f(d["scaled-manhattan"]["mean_eer"], 4),
             abs(d["scaled-manhattan"]["mean_eer"] - 0.096) < 0.001),
            ("cadence detector, mean EER", "<= 0.05", _f(d["cadence-fixed-text"]["mean_eer"], 4), d["cadence-fixed-text"]["mean_eer"] <= 0.05),
        ])
    elif protocol == "freetext":
        p = r["protocol"]
        lines += [
            f"{p['users_test']} test users ({p['users_train']} training users for the population and the alarm "
            f"level; split seed {p['split_seed']}), {p['enrol_sentences']} enrolment sentences, "
            f"{p['impostors_per_user']} impostors per user; run in {r.get('seconds', '?')} s. "
            "Anchor: TypeNet 2.2% at 50 keystrokes. Goals: <= 5% at 50, <= 2% at 200.",
            "",
            "| window (keystrokes) | mean EER per user | sd | pooled EER |",
            "|---|---|---|---|",
        ]
        for e in r["results"]:
            if e["mode"] == "verification":
                lines.append(f"| {e['window']} | {_f(e['eer'])} | {_f(e['eer_sd'])} | {_f(e['eer_pooled'])} |")
        cont = [e for e in r["results"] if e["mode"] == "continuous"]
        if cont:
            c = cont[0]
            lines += [
                "",
                "Continuous mode (cadence: decayed-window log-likelihood ratio"
                + (f", normalised per user by the enrolment's self-consistency (weight {p['self_weight']:g})"
                   if p.get("self_weight") else "")
                + f"; alarm level calibrated on training users for ANGA >= {p['anga_target_train']}"
                + (f" (each enrolled {1 + p['calibration_rotations']} times on different sentences)"
                   if p.get("calibration_rotations") else "")
                + f"; another test user's typing spliced in after {p['splice_after_sentences']} "
                "genuine sentences; after an alarm the statistic restarts and the model takes in the session's typing "
                "so far, as the gateway does after a step-up the user passed). Goal: ANIA <= 100 at ANGA >= 20,000.",
                "",
                "| alarm level | ANGA (genuine keystrokes per false alarm) | false alarms | ANIA mean | ANIA p95 | ANIA median | impostors detected |",
                "|---|---|---|---|---|---|---|",
                f"| {_f(c['alarm_level'], 2)} | {_f(c['anga_keystrokes'], 0)} (train {_f(c['anga_train_keystrokes'], 0)}) | "
                f"{c['false_alarms']} in {c['genuine_keystrokes']} | {_f(c['ania_mean_keystrokes'], 1)} | "
                f"{_f(c['ania_p95_keystrokes'], 0)} | {_f(c['ania_median_keystrokes'], 0)} | "
                f"{c['detected']}/{c['trials']} ({_f(c['detection_rate'])}) |",
            ]
        v = {e["window"]: e for e in r["results"] if e["mode"] == "verification"}
        rows = []
        if 50 in v:
            rows.append(("verification EER at 50 keystrokes (mean per user)", "<= 0.05", _f(v[50]["eer"]), v[50]["eer"] <= 0.05))
        if 200 in v:
            rows.append(("verification EER at 200 keystrokes (mean per user)", "<= 0.02", _f(v[200]["eer"]), v[200]["eer"] <= 0.02))
        if cont and cont[0]["anga_keystrokes"] is not None and cont[0]["ania_mean_keystrokes"] is not None:
            c = cont[0]
            rows.append(("continuous: ANIA at ANGA >= 20,000", "ANIA <= 100, ANGA >= 20,000",
                         f"ANIA {_f(c['ania_mean_keystrokes'], 1)}, ANGA {_f(c['anga_keystrokes'], 0)}",
                         c["ania_mean_keystrokes"] <= 100 and c["anga_keystrokes"] >= 20000))
        lines += goals_table(rows)
    else:
        from .relay import markdown as relay_markdown  # the relay eval owns its model description and tables

        return relay_markdown(r)
    return "\n".join(lines) + "\n"
