"""A tiny pretend shell for the demo web terminal: line editing and a few built-in commands, never a real process.

It exists so the gateway's terminal capture has a realistic keystroke stream to parse (echo, backspace, Enter,
output bursts). Pure: input characters in, output characters out.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from gateway.demo.assertion import Identity

MAX_LINE = 1024
CLEAR_SCREEN = "\x1b[2J\x1b[H"
FAKE_FILES = {
    "notes.txt": "Quarterly review moved to Thursday.\r\nRemember to file expenses by the 25th.",
    "motd": "Welcome to the Acme intranet jump host (demo). Nothing here is real.",
}
FAKE_DIRS = ("reports/", "projects/")
_UNSAFE_USER_CHARS = re.compile(r"[^A-Za-z0-9._-]")


def shell_user(email: str, sub: str = "") -> str:
    base = email.split("@", 1)[0] or sub or "user"
    return _UNSAFE_USER_CHARS.sub("_", base)[:32] or "user"


def prompt_for(email: str, sub: str = "") -> str:
    """The prompt the shell shows a user (what a person at the terminal waits to see before typing)."""
    return f"{shell_user(email, sub)}@intranet:~$ "


@dataclass
class FakeShell:
    identity: Identity
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    closed: bool = False
    _line: list[str] = field(default_factory=list)
    _escape: str | None = None  # inside an ANSI escape sequence sent by the client (arrow keys): swallowed

    @property
    def user(self) -> str:
        return shell_user(self.identity.email, self.identity.sub)

    @property
    def prompt(self) -> str:
        return prompt_for(self.identity.email, self.identity.sub)

    def banner(self) -> str:
        return f"Acme intranet web terminal (demo shell). Type 'help'.\r\n{self.prompt}"

    def feed(self, data: str) -> str:
        """Consume characters typed by the client; return what the terminal should display."""
        out: list[str] = []
        for ch in data:
            if self.closed:
                break
            if self._escape is not None:
                self._escape += ch
                # CSI sequences end with a byte in @..~; a bare ESC followed by something else ends at once.
                if (len(self._escape) == 1 and ch != "[") or (len(self._escape) > 1 and "@" <= ch <= "~"):
                    self._escape = None
                continue
            if ch == "\x1b":
                self._escape = ""
            elif ch in ("\r", "\n"):
                out.append("\r\n")
                line = "".join(self._line)
                self._line.clear()
                out.append(self._run(line))
                if not self.closed:
                    out.append(self.prompt)
            elif ch in ("\x7f", "\b"):
                if self._line:
                    self._line.pop()
                    out.append("\b \b")
            elif ch == "\x03":
                self._line.clear()
                out.append("^C\r\n" + self.prompt)
            elif ch == "\x0c":
                out.append(CLEAR_SCREEN + self.prompt + "".join(self._line))
            elif ch == "\x04" and not self._line:
                out.append("logout\r\n")
                self.closed = True
            elif ch == "\t":
                continue  # no completion in the demo shell
            elif ch >= " " and len(self._line) < MAX_LINE:
                self._line.append(ch)
                out.append(ch)
        return "".join(out)

    def _run(self, line: str) -> str:
        words = line.split()
        if not words:
            return ""
        command, args = words[0], words[1:]
        handler = {
            "help": self._help,
            "whoami": self._whoami,
            "id": self._whoami,
            "date": self._date,
            "ls": self._ls,
            "cat": self._cat,
            "echo": self._echo,
            "pwd": self._pwd,
            "uname": self._uname,
            "clear": self._clear,
            "exit": self._exit,
            "logout": self._exit,
        }.get(command)
        if handler is None:
            return f"{command[:64]}: command not found\r\n"
        return handler(args)

    def _help(self, _args: list[str]) -> str:
        return "built-in commands: help whoami date ls cat echo pwd uname clear exit\r\n"

    def _whoami(self, _args: list[str]) -> str:
        ident = self.identity
        groups = ",".join(ident.groups) or "-"
        amr = ",".join(ident.amr) or "-"
        return (
            f"{self.user}\r\n"
            f"  sub={ident.sub} email={ident.email or '-'}\r\n"
            f"  groups={groups} acr={ident.acr or '-'} amr={amr} ztgate_state={ident.ztgate_state or '-'}\r\n"
        )

    def _date(self, _args: list[str]) -> str:
        return self.clock().strftime("%a %b %d %H:%M:%S UTC %Y") + "\r\n"

    def _ls(self, _args: list[str]) -> str:
        return "  ".join([*FAKE_DIRS, *sorted(FAKE_FILES)]) + "\r\n"

    def _cat(self, args: list[str]) -> str:
        if not args:
            return "cat: missing file operand\r\n"
        return "".join(
            FAKE_FILES[name] + "\r\n" if name in FAKE_FILES else f"cat: {name[:64]}: No such file or directory\r\n"
            for name in args
        )

    def _echo(self, args: list[str]) -> str:
        return " ".join(args) + "\r\n"

    def _pwd(self, _args: list[str]) -> str:
        return f"/home/{self.user}\r\n"

    def _uname(self, _args: list[str]) -> str:
        return "Linux intranet-demo 6.1.0-demo x86_64 GNU/Linux\r\n"

    def _clear(self, _args: list[str]) -> str:
        return CLEAR_SCREEN

    def _exit(self, _args: list[str]) -> str:
        self.closed = True
        return "logout\r\n"
