"""mitmproxy's AddonManager with each hook's handlers looked up once per addon chain instead of on every event.

For every hook of every flow (and the `update` hook it sends after each), mitmproxy 12's AddonManager walks the
whole chain: per addon a generator-based context manager (`safecall`), a coroutine (`invoke_addon`), two more
generators (`_iter_hooks`, `traverse`), `hasattr`/`getattr` and `Hook.args()` (dataclasses.fields), whether or
not the addon has that hook. In ztgate's chain (five core addons and ours) one proxied GET makes eight such walks
(four hooks, each followed by `update`, which no addon of the chain has). Measured with `python -m
bench.proxy_hooks` on the 2-core dev machine: the four HTTP hooks of one GET cost 87 us of CPU in bare mitmproxy,
nearly all of it this walk (104 us with one more addon whose hooks do nothing), and 46 us in ztgate with
HookDispatch and its addon's real work.

HookDispatch keeps what the walk decides, per hook name: which addons of the chain have the hook, and their
functions (an addon's sub-addons, as `traverse` orders them). An event then calls exactly those, with the same
semantics: chain order; an exception is logged as mitmproxy logs it and skips the rest of that top-level addon's
group; AddonHalt stops the event; an awaitable result is awaited. The plans are dropped whenever the chain changes
through the manager (add, register, remove, clear). What it does not follow: an addon that grows or loses a hook
method, or a sub-addon list changed, without going through the manager. ztgate's chain is fixed (build_master);
checked against mitmproxy 12.2.3: re-check `AddonManager.trigger_event` and `handle_lifecycle` when upgrading.
"""

from __future__ import annotations

import inspect
import sys
import types
from collections.abc import Callable
from typing import Any

from mitmproxy import addonmanager, exceptions, flow, hooks
from mitmproxy.addonmanager import AddonManager, traverse

# per hook name: one tuple of functions per top-level addon that has the hook, in chain order
Plan = tuple[tuple[Callable[..., Any], ...], ...]


class HookDispatch(AddonManager):
    def __init__(self, master: Any) -> None:
        super().__init__(master)
        self._plans: dict[str, Plan] = {}

    # ------------------------------------------------------------------ the chain changes: plans are rebuilt

    def register(self, addon: Any) -> Any:
        self._plans.clear()
        try:
            return super().register(addon)
        finally:
            self._plans.clear()

    def add(self, *addons: Any) -> None:
        self._plans.clear()
        try:
            super().add(*addons)
        finally:
            self._plans.clear()

    def remove(self, addon: Any) -> None:
        self._plans.clear()
        try:
            super().remove(addon)
        finally:
            self._plans.clear()

    def clear(self) -> None:
        self._plans.clear()
        try:
            super().clear()
        finally:
            self._plans.clear()

    def _plan(self, name: str) -> Plan:
        plan = self._plans.get(name)
        if plan is None:
            groups = []
            for top in self.chain:
                funcs = []
                for a in traverse([top]):
                    func = getattr(a, name, None)
                    if not func:
                        continue
                    if callable(func):
                        funcs.append(func)
                    elif not isinstance(func, types.ModuleType):
                        # AddonManager._iter_hooks raises when it meets it, inside the group's error handling
                        funcs.append(_not_callable(f"Addon handler {name} ({a}) not callable"))
                if funcs:
                    groups.append(tuple(funcs))
            plan = self._plans[name] = tuple(groups)
        return plan

    # ------------------------------------------------------------------ events

    async def handle_lifecycle(self, event: hooks.Hook) -> None:
        message = event.args()[0]
        await self.trigger_event(event)
        # no UpdateHook object (a dataclass and its checks) when no addon listens to `update`
        if isinstance(message, flow.Flow) and self._plan("update"):
            await self.trigger_event(hooks.UpdateHook([message]))

    async def trigger_event(self, event: hooks.Hook) -> None:
        plan = self._plan(event.name)
        if not plan:
            return
        args = event.args()
        for funcs in plan:
            try:
                for func in funcs:
                    result = func(*args)
                    if result is not None and inspect.isawaitable(result):
                        await result
            except (exceptions.AddonHalt, exceptions.OptionsError) as exc:
                if isinstance(exc, exceptions.AddonHalt):
                    return
                raise
            except Exception:
                _log_addon_error()


def _log_addon_error() -> None:
    """What mitmproxy's `safecall` logs for an exception in a hook."""
    etype, value, tb = sys.exc_info()
    tb = addonmanager.cut_traceback(tb, "trigger_event")
    addonmanager.logger.error(f"Addon error: {value}", exc_info=(etype, value, tb))


def _not_callable(message: str) -> Callable[..., Any]:
    def fail(*args: Any) -> None:
        raise exceptions.AddonManagerError(message)

    return fail
