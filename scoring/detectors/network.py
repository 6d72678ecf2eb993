"""`network`: kernel TCP RTT against application RTT against the RTT expected for the user's claimed site.

- application RTT far above TCP RTT: the TCP connection ends at something nearer than the client that answers the
  application's pings (a proxy or relay in front of the real client);
- TCP RTT far above what the claimed site implies: the client is not where it claims to be.
Medians over rings of recent samples keep single slow samples from deciding.

Behind a trusted load balancer the gateway sends no TCP RTT (that connection's RTT is the balancer's leg). The
client's leg then comes from the page's pings: the fastest recent one, as no ping can beat the network, and the
geography check uses it in place of the TCP RTT. A client can slow its own pongs (it cannot speed them up), so the
leg taken from pings is capped where the geography check would alarm: hiding added latency behind slow pongs then
raises that alarm instead.
"""

from __future__ import annotations

import math

import numpy as np

from ..ring import Ring
from ..signals import Evidence, Signal
from ..stats import sigmoid

NAME = "network"
WINDOW = 32
MIN_SAMPLES = 3
APP_OVERHEAD_MS = 30.0  # an application ping also waits for the client's event loop and rendering
PROXY_MARGIN_MS = 40.0
GEO_MARGIN_MS = 40.0
GEO_MARGIN_FRACTION = 0.5  # last mile and Wi-Fi add a share of the expected RTT
SCALE_MS = 8.0


def _median(v: list[float]) -> float:
    s = sorted(v)
    n = len(s)
    return float(s[n // 2]) if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def _robust_sd(v: list[float]) -> float:
    if not v:
        return 0.0
    mid = _median(v)
    return 1.4826 * _median([abs(x - mid) for x in v])


class NetworkDetector:
    def __init__(self, expected_rtt_ms: float | None):
        if expected_rtt_ms is not None and not (math.isfinite(expected_rtt_ms) and 0 <= expected_rtt_ms < 10_000):
            raise ValueError(f"expected_rtt_ms must be a finite number of ms in [0, 10000), got {expected_rtt_ms!r}")
        self.expected = expected_rtt_ms
        self.net = Ring(WINDOW, {"ms": "f4"})
        self.app = Ring(WINDOW, {"ms": "f4"})
        self._tcp_median: float | None = None  # cache for tcp_rtt_ms(); None = not computed since the last sample
        self._app_fastest: float | None = None  # cache for client_leg_ms(), likewise

    def update(self, net_ms: np.ndarray, app_ms: np.ndarray) -> None:
        net_ms = net_ms[np.isfinite(net_ms) & (net_ms >= 0) & (net_ms < 60_000)]
        app_ms = app_ms[np.isfinite(app_ms) & (app_ms >= 0) & (app_ms < 60_000)]
        if len(net_ms):
            self.net.push(ms=net_ms.astype(np.float32))
            self._tcp_median = None
        if len(app_ms):
            self.app.push(ms=app_ms.astype(np.float32))
            self._app_fastest = None

    def tcp_rtt_ms(self) -> float | None:
        """Median kernel TCP RTT of the client connection over the recent samples (None until MIN_SAMPLES)."""
        if self.net.count < MIN_SAMPLES:
            return None
        if self._tcp_median is None:
            self._tcp_median = _median(self.net.get("ms").tolist())
        return self._tcp_median

    def client_leg_ms(self) -> float | None:
        """The client's network round trip: the TCP RTT, or without TCP samples the fastest recent page ping (capped
        at the geography alarm when the site's RTT is known); None until MIN_SAMPLES of either."""
        tcp = self.tcp_rtt_ms()
        if tcp is not None or self.net.count:
            return tcp  # a direct connection: its pings are not needed (nor wanted: a client can slow them)
        if self.app.count < MIN_SAMPLES:
            return None
        if self._app_fastest is None:
            self._app_fastest = float(self.app.get("ms").min())
        if self.expected is None:
            return self._app_fastest
        return min(self._app_fastest, self.expected + self._geo_alarm())

    def _geo_alarm(self) -> float:
        assert self.expected is not None
        return max(GEO_MARGIN_MS, GEO_MARGIN_FRACTION * self.expected)

    def reset(self) -> None:
        self.net.clear()
        self.app.clear()
        self._tcp_median = None
        self._app_fastest = None

    def signal(self, evidence: Evidence) -> Signal:
        # rings of at most WINDOW values: plain Python lists are cheaper than numpy calls here
        net = self.net.get("ms").tolist()
        app = self.app.get("ms").tolist()
        ev = Evidence(evidence.keystrokes, evidence.seconds, len(net) + len(app))
        has_net = len(net) >= MIN_SAMPLES
        has_app = len(app) >= MIN_SAMPLES
        details: dict[str, float] = {"tcp_samples": float(len(net)), "app_samples": float(len(app))}
        components: dict[str, float] = {}
        notes = []
        if has_net:
            net_med = _median(net)
            details["tcp_rtt_ms"] = net_med
        if has_app:
            details["app_rtt_ms"] = _median(app)
            details["app_fastest_ms"] = min(app)
        if has_net and has_app:
            extra = details["app_rtt_ms"] - net_med
            spread = math.hypot(_robust_sd(app), _robust_sd(net))
            alarm = APP_OVERHEAD_MS + max(PROXY_MARGIN_MS, 2.0 * spread)
            components["hidden_leg"] = sigmoid((extra - alarm) / SCALE_MS)
            details.update(app_minus_tcp_ms=extra, hidden_leg_alarm_ms=alarm)
            notes.append(f"application RTT {details['app_rtt_ms']:.0f} ms vs TCP RTT {net_med:.0f} ms ({extra:+.0f} ms, alarm above {alarm:.0f})")
        if has_net and self.expected is not None:
            excess = net_med - self.expected
            alarm = self._geo_alarm()
            components["geography"] = sigmoid((excess - alarm) / SCALE_MS)
            details.update(expected_rtt_ms=self.expected, tcp_excess_ms=excess, geography_alarm_ms=alarm)
            notes.append(f"TCP RTT {net_med:.0f} ms vs {self.expected:.0f} ms expected for the claimed site ({excess:+.0f} ms, alarm above {alarm:.0f})")
        elif has_app and not net and self.expected is not None:  # behind a trusted proxy: the pings stand in
            fastest = min(app)
            excess = fastest - self.expected
            alarm = self._geo_alarm()
            components["geography"] = sigmoid((excess - alarm) / SCALE_MS)
            details.update(expected_rtt_ms=self.expected, app_excess_ms=excess, geography_alarm_ms=alarm)
            notes.append(f"fastest application RTT {fastest:.0f} ms (no TCP RTT: behind a proxy) vs {self.expected:.0f} ms expected for the claimed site ({excess:+.0f} ms, alarm above {alarm:.0f})")
        if not components:
            missing = []
            if not has_net:
                missing.append(f"TCP RTT samples ({len(net)}/{MIN_SAMPLES})")
            if not has_app and self.expected is None:
                missing.append(f"application RTT samples ({len(app)}/{MIN_SAMPLES}) or an expected RTT for the site")
            return Signal(NAME, 0.0, False, ev, "needs " + " and ".join(missing) + ": insufficient", details)
        for k, v in components.items():
            details[f"component_{k}"] = v
        score = max(components.values())
        verdict = "network path inconsistent with a local client" if score >= 0.5 else "network path consistent"
        return Signal(NAME, score, True, ev, f"{verdict}: " + "; ".join(notes), details)

    def state(self) -> dict[str, np.ndarray]:
        return {**self.net.state("network.net"), **self.app.state("network.app")}

    def load(self, state: dict[str, np.ndarray]) -> None:
        self.net.load("network.net", state)
        self.app.load("network.app", state)
        self._tcp_median = None
        self._app_fastest = None
