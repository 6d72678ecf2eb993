"""End-to-end takeover scenario harness (issue 8): human timing from the Aalto data typed into real Chromium,
a delaying TCP relay, a closed-loop remote operator, automation injectors, and the scenario report.

Modules: aalto (dataset -> typing plans), keymap/plan (keys and timelines), schedule (timed playback),
browser (CDP typing), testpage (the harness's own recording page), relay, protocol/agent/operator (relayed
operator), script (automation), report (results, Wilson CIs, docs/scenarios.md), runner (`ztgate scenario`).
No module logs typed characters.
"""
