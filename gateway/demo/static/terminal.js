// A minimal terminal in plain JS: a <pre> screen, a keydown handler and a WebSocket to /ws/terminal.
// Frames: client -> {"type":"input","data":"<chars>"}, server -> {"type":"output","data":"..."}.
(() => {
  "use strict";
  const screen = document.getElementById("screen");
  const statusEl = document.getElementById("term-status");
  const MAX_CHARS = 200000;
  const text = document.createTextNode("");
  const cursor = document.createElement("span");
  cursor.className = "cursor";
  cursor.textContent = " ";
  screen.append(text, cursor);

  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(scheme + "//" + location.host + "/ws/terminal");
  ws.addEventListener("open", () => { statusEl.textContent = "connected"; screen.focus(); });
  ws.addEventListener("close", () => { statusEl.textContent = "disconnected"; });
  ws.addEventListener("error", () => { statusEl.textContent = "error"; });
  ws.addEventListener("message", (ev) => {
    let msg;
    try { msg = JSON.parse(ev.data); } catch { return; }
    if (msg.type === "output" && typeof msg.data === "string") write(msg.data);
    else if (msg.type === "error") write("\r\n[error: " + msg.data + "]\r\n");
  });

  function write(data) {
    let buf = text.data;
    for (let i = 0; i < data.length; i++) {
      const ch = data[i];
      if (ch === "\x1b") {
        // Only "clear screen + home" is understood; other CSI sequences are skipped.
        const m = /^\x1b\[[0-9;?]*[@-~]/.exec(data.slice(i));
        if (m) { if (m[0] === "\x1b[2J") buf = ""; i += m[0].length - 1; }
      } else if (ch === "\b") {
        if (buf.length && buf[buf.length - 1] !== "\n") buf = buf.slice(0, -1);
      } else if (ch === "\r") {
        // "\r\n" becomes "\n"; a lone "\r" is ignored by this simple screen.
      } else {
        buf += ch;
      }
    }
    if (buf.length > MAX_CHARS) buf = buf.slice(buf.length - MAX_CHARS);
    text.data = buf;
    screen.scrollTop = screen.scrollHeight;
  }

  function send(data) {
    if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "input", data }));
  }

  const ARROWS = { ArrowUp: "\x1b[A", ArrowDown: "\x1b[B", ArrowRight: "\x1b[C", ArrowLeft: "\x1b[D" };
  screen.addEventListener("keydown", (e) => {
    let data = null;
    if (e.ctrlKey && !e.altKey && !e.metaKey && e.key.length === 1 && /[a-z]/i.test(e.key)) {
      data = String.fromCharCode(e.key.toLowerCase().charCodeAt(0) - 96);
    } else if (e.key === "Enter") data = "\r";
    else if (e.key === "Backspace") data = "\x7f";
    else if (e.key === "Tab") data = "\t";
    else if (e.key === "Escape") data = "\x1b";
    else if (e.key in ARROWS) data = ARROWS[e.key];
    else if (e.key.length === 1 && !e.ctrlKey && !e.metaKey) data = e.key;
    if (data !== null) { e.preventDefault(); send(data); }
  });
  screen.addEventListener("paste", (e) => {
    e.preventDefault();
    send((e.clipboardData || window.clipboardData).getData("text"));
  });
  screen.addEventListener("click", () => screen.focus());
})();
