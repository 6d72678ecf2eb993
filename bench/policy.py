"""`ztgate bench policy [--json]`: time per policy decision for a 50-rule set; writes docs/benchmarks.md.

The set has 5 policies x 10 rules over all five signals, session and user fields (the shape of real policies:
thresholds on scores and details, evidence guards, group membership). Each decision is one
`PolicySet.evaluate(context)` call on a fresh context dict, as the gateway makes it after each scorer update.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path

import policies
from policies.schema import SIGNAL_NAMES
from bench.docs import write_section

SECTION = "## Policy evaluation"
RULES_PER_POLICY = 10
POLICIES = 5


def rule_set_yaml() -> str:
    """5 policies x 10 rules; deterministic."""
    lines = ["policies:"]
    actions = ["allow", "restrict", "step_up", "terminate"]
    for p in range(POLICIES):
        lines += [f"  - id: bench-{p}", "    rules:"]
        for r in range(RULES_PER_POLICY):
            signal = SIGNAL_NAMES[(p + r) % len(SIGNAL_NAMES)]
            threshold = 0.5 + 0.05 * r
            action = actions[(p * RULES_PER_POLICY + r) % len(actions)]
            when = {
                0: f"signals.{signal}.sufficient && signals.{signal}.score >= {threshold:.2f}",
                1: f"signals.relay.sufficient && signals.relay.details.added_latency_ci_low_ms >= {60 + 10 * r}.0",
                2: f"signals.{signal}.evidence.keystrokes >= {100 * r} && risk >= {threshold:.2f}",
                3: f"session.step_up_failures >= {r} && 'contractors' in user.groups",
                4: f"risk >= {threshold:.2f} && session.seconds_since_auth > {300 * r}.0 && user.country != 'FR'",
            }[r % 5]
            lines += [f"      - id: r{r}", f"        when: \"{when}\"", f"        action: {action}"]
            if action == "restrict":
                lines.append("        params: {read_only: true}")
    return "\n".join(lines) + "\n"


def make_context(rng: random.Random) -> dict:
    signals = {}
    for name in SIGNAL_NAMES:
        signals[name] = {
            "score": rng.random() * 0.9,
            "sufficient": rng.random() > 0.2,
            "details": {"added_latency_ms": rng.uniform(0, 150), "added_latency_ci_low_ms": rng.uniform(0, 110),
                        "added_latency_ci_high_ms": rng.uniform(50, 200)},
            "evidence": {"keystrokes": rng.randrange(0, 2000), "seconds": rng.uniform(0, 600), "samples": rng.randrange(0, 500)},
        }
    return {
        "signals": signals,
        "risk": rng.random() * 0.9,
        "session": {"sid": "s" * 22, "state": "active", "age_seconds": rng.uniform(0, 7200), "idle_seconds": 3.0,
                    "seconds_since_auth": rng.uniform(0, 7200), "acr": "", "amr": ["pwd", "otp"], "route": "app",
                    "route_kind": "http", "client_ip": "192.0.2.10", "user_agent": "bench", "step_up_count": 0,
                    "step_up_failures": rng.randrange(0, 4), "evidence_keystrokes": 500, "evidence_seconds": 120.0},
        "user": {"name": "alice", "email": "alice@example.test", "groups": ["eng", "contractors"], "site": "paris",
                 "country": rng.choice(["FR", "DE"])},
    }


def _percentiles(samples_ns: list[int]) -> dict:
    ordered = sorted(samples_ns)
    n = len(ordered)
    pick = lambda q: ordered[min(n - 1, int(q * n))] / 1000.0  # noqa: E731
    return {"n": n, "p50_us": round(pick(0.50), 1), "p90_us": round(pick(0.90), 1), "p99_us": round(pick(0.99), 1),
            "mean_us": round(statistics.fmean(ordered) / 1000.0, 1), "max_us": round(ordered[-1] / 1000.0, 1)}


def _time_calls(call, contexts: list[dict], repeats: int, clock=time.perf_counter_ns) -> list[int]:
    for ctx in contexts[:200]:
        call(ctx)  # warm-up
    samples = []
    for _ in range(repeats):
        for ctx in contexts:
            start = clock()
            call(ctx)
            samples.append(clock() - start)
    return samples


def _engine_comparison(conditions: list[str], context: dict) -> dict:
    """Raw evaluation of the same 50 conditions on the other CEL packages, when they are installed."""
    results: dict[str, dict] = {}
    try:
        import cel as rust_cel  # common-expression-language

        programs = [rust_cel.compile(c) for c in conditions]

        def run_rust(ctx):
            activation = rust_cel.Context(variables=ctx)
            for p in programs:
                try:
                    p.execute(activation)
                except Exception:  # noqa: BLE001 - a missing map key raises; that is part of the cost
                    pass

        results["common-expression-language"] = _percentiles(_time_calls(run_rust, [context] * 200, 10))
    except ImportError:
        results["common-expression-language"] = {"skipped": "not installed"}
    try:
        import celpy

        env = celpy.Environment()
        programs = [env.program(env.compile(c)) for c in conditions]

        def run_celpy(ctx):
            activation = celpy.json_to_cel(ctx)
            for p in programs:
                try:
                    p.evaluate(activation)
                except Exception:  # noqa: BLE001
                    pass

        results["cel-python"] = _percentiles(_time_calls(run_celpy, [context] * 20, 2))
    except ImportError:
        results["cel-python"] = {"skipped": "not installed"}
    return results


def run(decisions: int = 20000, compare_engines: bool = True) -> dict:
    rng = random.Random(5)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "bench.yaml").write_text(rule_set_yaml())
        start = time.perf_counter()
        policy_set = policies.load_directory(tmp)
        load_ms = (time.perf_counter() - start) * 1000
    contexts = [make_context(rng) for _ in range(1000)]
    repeats = max(1, decisions // len(contexts))
    def decide(context: dict):  # what the gateway runs after each scorer update
        return policy_set.evaluate(context, near_misses=False)

    session_samples = _time_calls(decide, contexts, repeats)
    # CPU time of the evaluating thread: what evaluation costs when the scheduler does not preempt it.
    cpu_samples = _time_calls(decide, contexts, repeats, clock=time.thread_time_ns)
    near_samples = _time_calls(policy_set.evaluate, contexts, max(1, repeats // 4), clock=time.thread_time_ns)
    # The cost of each decision itself, without the shared machine's preemptions and GC pauses: per context, the
    # least CPU time of 5 replays; percentiles are then taken across contexts.
    quiet_samples = [min(_time_calls(decide, [ctx], 5, clock=time.thread_time_ns)) for ctx in contexts]
    with_request = [{**c, "request": {"method": "POST", "path": "/api/x", "host": "app.example.test",
                                       "scheme": "https", "content_type": "application/json"}} for c in contexts]
    request_samples = _time_calls(decide, with_request, max(1, repeats // 4))
    explain_samples = _time_calls(lambda c: policies.explain(policy_set, c), contexts[:300], 1)
    actions: dict[str, int] = {}
    for ctx in contexts:
        label = policy_set.evaluate(ctx).action.label
        actions[label] = actions.get(label, 0) + 1
    result = {
        "rules": len(policy_set.rules),
        "policies": len(policy_set.policies),
        "load_ms": round(load_ms, 1),
        "evaluate": _percentiles(session_samples),
        "evaluate_cpu": _percentiles(cpu_samples),
        "evaluate_with_near_misses_cpu": _percentiles(near_samples),
        "evaluate_cpu_quiet": _percentiles(quiet_samples),
        "evaluate_with_request": _percentiles(request_samples),
        "explain": _percentiles(explain_samples),
        "decision_mix": actions,
        "engine": "cel-expr-python",
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, shared 2-core VM",
    }
    if compare_engines:
        conditions = [r.rule.when for r in policy_set.rules]
        result["other_engines_raw_50_conditions"] = _engine_comparison(conditions, contexts[0])
    return result


def render_section(result: dict) -> str:
    e, r, x = result["evaluate"], result["evaluate_with_request"], result["explain"]
    c, n, q = result["evaluate_cpu"], result["evaluate_with_near_misses_cpu"], result["evaluate_cpu_quiet"]
    lines = [
        SECTION,
        "",
        f"`ztgate bench policy` ({result['python']}, {result['machine']}): one "
        f"`PolicySet.evaluate(context, near_misses=False)` per decision (what the gateway runs after each scorer "
        f"update; near misses are for explanations), {result['rules']} rules in {result['policies']} policies over all five signals, session and user "
        f"fields; contexts vary (decision mix {result['decision_mix']}). Conditions are compiled once at load "
        f"({result['load_ms']} ms for the set).",
        "",
        "| measurement | n | p50 (us) | p90 (us) | p99 (us) | mean (us) |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| evaluate, session-level | {e['n']} | {e['p50_us']} | {e['p90_us']} | {e['p99_us']} | {e['mean_us']} |",
        f"| evaluate, session-level, thread CPU time | {c['n']} | {c['p50_us']} | {c['p90_us']} | {c['p99_us']} | {c['mean_us']} |",
        f"| evaluate, session-level, least CPU time of 5 replays per context | {q['n']} | {q['p50_us']} | "
        f"{q['p90_us']} | {q['p99_us']} | {q['mean_us']} |",
        f"| evaluate, per request | {r['n']} | {r['p50_us']} | {r['p90_us']} | {r['p99_us']} | {r['mean_us']} |",
        f"| evaluate with near misses, thread CPU time | {n['n']} | {n['p50_us']} | {n['p90_us']} | {n['p99_us']} | "
        f"{n['mean_us']} |",
        f"| explain (all rules traced) | {x['n']} | {x['p50_us']} | {x['p90_us']} | {x['p99_us']} | {x['mean_us']} |",
    ]
    others = result.get("other_engines_raw_50_conditions")
    if others:
        lines += ["", "Other CEL packages, evaluating the same 50 conditions on one context (raw engine calls, no "
                      "matching or decision logic):", ""]
        lines += ["| package | n | p50 (us) | p99 (us) |", "| --- | --- | --- | --- |"]
        for name, stats in others.items():
            if "skipped" in stats:
                lines.append(f"| {name} | - | {stats['skipped']} | |")
            else:
                lines.append(f"| {name} | {stats['n']} | {stats['p50_us']} | {stats['p99_us']} |")
    lines += ["", "Wall-clock rows include time the process spent preempted: the machine is shared (2 cores, other "
                  "work running), so their tail is noisy; the thread-CPU row is the cost of evaluation itself. Rerun "
                  "with `ztgate bench policy --json`.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ztgate bench policy", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--decisions", type=int, default=20000)
    parser.add_argument("--no-engines", action="store_true", help="skip the other CEL packages")
    parser.add_argument("--doc", default=str(Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"),
                        help="markdown file whose '## Policy evaluation' section is rewritten ('' to skip)")
    args = parser.parse_args(argv)
    result = run(args.decisions, compare_engines=not args.no_engines)
    if args.doc:
        write_section(render_section(result), Path(args.doc))
    print(json.dumps(result, indent=2) if args.json else render_section(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
