"""The pretend shell behind /ws/terminal, as a pure function of its input."""

from __future__ import annotations

from datetime import UTC, datetime

from gateway.demo.assertion import Identity
from gateway.demo.fake_shell import CLEAR_SCREEN, FakeShell


def shell(**claims) -> FakeShell:
    base = {"sub": "u1", "email": "bob.smith@example.com", "groups": ["ops"], "acr": "mfa", "amr": ["pwd"],
            "ztgate_state": "active"}
    return FakeShell(Identity.from_claims(base | claims), clock=lambda: datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC))


def test_prompt_uses_a_safe_user_name():
    assert shell().prompt == "bob.smith@intranet:~$ "
    assert shell(email="", sub="we ird/<name>").user == "we_ird__name_"


def test_typing_is_echoed_and_enter_runs_the_line():
    sh = shell()
    assert sh.feed("echo a  b") == "echo a  b"
    assert sh.feed("\r") == "\r\na b\r\n" + sh.prompt


def test_backspace_erases_only_what_was_typed():
    sh = shell()
    assert sh.feed("\x7f") == ""
    assert sh.feed("ab\x7f\b") == "ab\b \b\b \b"
    assert sh.feed("\x7f") == ""


def test_ctrl_c_discards_the_line_and_ctrl_l_clears():
    sh = shell()
    sh.feed("whoami")
    assert sh.feed("\x03") == "^C\r\n" + sh.prompt
    assert sh.feed("\r") == "\r\n" + sh.prompt  # the discarded line did not run
    sh.feed("ls")
    assert sh.feed("\x0c") == CLEAR_SCREEN + sh.prompt + "ls"


def test_arrow_keys_and_other_escape_sequences_are_swallowed():
    sh = shell()
    assert sh.feed("l\x1b[Ds\x1b[1;5C\x1bx") == "ls"


def test_builtin_commands():
    sh = shell()
    assert sh.feed("date\r").startswith("date\r\nTue Mar 04 05:06:07 UTC 2025\r\n")
    assert "notes.txt" in sh.feed("ls\r")
    assert "Quarterly review" in sh.feed("cat notes.txt\r")
    assert "No such file" in sh.feed("cat /etc/shadow\r")
    assert "groups=ops acr=mfa amr=pwd ztgate_state=active" in sh.feed("whoami\r")
    assert "built-in commands" in sh.feed("help\r")
    assert "command not found" in sh.feed("bash\r")


def test_exit_and_ctrl_d_close_the_shell():
    sh = shell()
    assert sh.feed("exit\rls\r") == "exit\r\nlogout\r\n"
    assert sh.closed
    sh = shell()
    assert sh.feed("\x04") == "logout\r\n" and sh.closed


def test_line_length_is_bounded():
    sh = shell()
    assert len(sh.feed("x" * 5000)) == 1024
