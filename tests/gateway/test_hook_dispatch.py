"""gateway.proxy.dispatch.HookDispatch against mitmproxy's own AddonManager: the same addons, the same events,
the same calls in the same order, the same errors logged, AddonHalt and sub-addons handled alike, and a chain
change seen at once. Real mitmproxy masters and hooks; the proxy end to end runs through it in the e2e suites."""

from __future__ import annotations

import logging
import re

from mitmproxy import exceptions, hooks
from mitmproxy.addonmanager import AddonManager
from mitmproxy.master import Master
from mitmproxy.options import Options
from mitmproxy.proxy.layers.http import HttpRequestHeadersHook, HttpRequestHook, HttpResponseHook
from mitmproxy.test import tflow

from gateway.proxy.dispatch import HookDispatch


class Recorder:
    def __init__(self, name: str, calls: list, *, fail: str = "", halt: str = "", sub: list | None = None) -> None:
        self.name, self.calls, self.fail, self.halt = name, calls, fail, halt
        if sub is not None:
            self.addons = sub

    def _hit(self, hook: str) -> None:
        self.calls.append((self.name, hook))
        if hook == self.fail:
            raise ValueError(f"{self.name} failed in {hook}")
        if hook == self.halt:
            raise exceptions.AddonHalt()

    def requestheaders(self, flow) -> None:
        self._hit("requestheaders")

    async def request(self, flow) -> None:
        self._hit("request")

    def response(self, flow) -> None:
        self._hit("response")


class Updates:
    def __init__(self, calls: list) -> None:
        self.calls = calls

    def update(self, flows) -> None:
        self.calls.append(("updates", f"update {len(flows)}"))


class NotCallable:
    request = 5  # mitmproxy logs "not callable" on every event, inside this addon's error handling
    response = None  # falsy: skipped


def _addons(calls: list, *, with_updates: bool) -> list:
    child = Recorder("child", calls, fail="response")
    addons = [
        Recorder("first", calls),
        Recorder("parent", calls, fail="request", sub=[child, Recorder("grandchild", calls)]),
        NotCallable(),
        Recorder("halts", calls, halt="requestheaders"),
        Recorder("last", calls),
    ]
    if with_updates:
        addons.insert(1, Updates(calls))
    return addons


async def _run(manager: type[AddonManager], with_updates: bool, caplog) -> tuple[list, list]:
    master = Master(Options())
    master.addons = manager(master)
    calls: list = []
    master.addons.add(*_addons(calls, with_updates=with_updates))
    flow = tflow.tflow(resp=True)
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="mitmproxy.addonmanager"):
        for hook in (HttpRequestHeadersHook(flow), HttpRequestHook(flow), HttpResponseHook(flow)):
            await master.addons.handle_lifecycle(hook)
        await master.addons.trigger_event(hooks.UpdateHook([flow, flow]))
        late: list = []
        master.addons.add(Recorder("added later", late))  # the chain changed: the next event must see it
        await master.addons.handle_lifecycle(HttpResponseHook(flow))
        master.addons.remove(master.addons.get("first"))
        await master.addons.handle_lifecycle(HttpRequestHook(flow))
    errors = [re.sub(r" at 0x[0-9a-f]+", "", r.getMessage()) for r in caplog.records]
    return calls + late, errors


async def test_the_same_calls_and_errors_as_mitmproxys_addon_manager(caplog):
    for with_updates in (False, True):
        expected = await _run(AddonManager, with_updates, caplog)
        got = await _run(HookDispatch, with_updates, caplog)
        assert got == expected
        calls, errors = got
        assert ("halts", "requestheaders") in calls and ("last", "requestheaders") not in calls  # AddonHalt
        assert ("child", "response") in calls and ("grandchild", "response") not in calls  # the group stops
        assert ("last", "response") in calls  # the next addon carries on
        assert "Addon error: parent failed in request" in errors
        assert "Addon error: Addon handler request (" in " ".join(errors)  # the non-callable `request`
        assert ("added later", "response") in calls
        assert any(name == "updates" for name, _ in calls) == with_updates
        assert calls[-1][0] != "first"  # removed before the last event


async def test_an_options_error_propagates_as_in_mitmproxy():
    class Strict:
        def request(self, flow) -> None:
            raise exceptions.OptionsError("bad option")

    for manager in (AddonManager, HookDispatch):
        master = Master(Options())
        master.addons = manager(master)
        master.addons.add(Strict())
        try:
            await master.addons.handle_lifecycle(HttpRequestHook(tflow.tflow()))
        except exceptions.OptionsError:
            pass
        else:
            raise AssertionError(f"{manager.__name__} swallowed the OptionsError")
