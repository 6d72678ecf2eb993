// ztgate: the WebAuthn ceremony for the security-key pages (/.ztgate/mfa/webauthn[/register]).
// An external script because the control plane's pages allow scripts from 'self' only (no inline code).
// The server sends options as JSON (binary fields base64url); the credential goes back the same way.
(() => {
  "use strict";
  const root = document.getElementById("ztgate-webauthn");
  if (!root) return;
  const button = document.getElementById("ztgate-webauthn-start");
  const status = document.getElementById("ztgate-webauthn-status");
  const base = root.dataset.mode === "register" ? "/.ztgate/mfa/webauthn/register" : "/.ztgate/mfa/webauthn";

  const say = (text) => { status.textContent = text; };

  const toBytes = (text) => {
    const b64 = text.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((text.length + 3) % 4);
    return Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  };
  const toText = (buffer) => {
    let binary = "";
    for (const byte of new Uint8Array(buffer)) binary += String.fromCharCode(byte);
    return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  };

  const creationOptions = (o) => ({
    ...o,
    challenge: toBytes(o.challenge),
    user: { ...o.user, id: toBytes(o.user.id) },
    excludeCredentials: (o.excludeCredentials || []).map((c) => ({ ...c, id: toBytes(c.id) })),
  });
  const requestOptions = (o) => ({
    ...o,
    challenge: toBytes(o.challenge),
    allowCredentials: (o.allowCredentials || []).map((c) => ({ ...c, id: toBytes(c.id) })),
  });

  const credentialJSON = (cred) => {
    if (typeof cred.toJSON === "function") return cred.toJSON();
    const r = cred.response;
    const response = { clientDataJSON: toText(r.clientDataJSON) };
    if (r.attestationObject) {
      response.attestationObject = toText(r.attestationObject);
      if (typeof r.getTransports === "function") response.transports = r.getTransports();
    } else {
      response.authenticatorData = toText(r.authenticatorData);
      response.signature = toText(r.signature);
      if (r.userHandle) response.userHandle = toText(r.userHandle);
    }
    return { id: cred.id, rawId: toText(cred.rawId), type: cred.type, response,
             authenticatorAttachment: cred.authenticatorAttachment || undefined,
             clientExtensionResults: cred.getClientExtensionResults() };
  };

  const post = async (path, body) => {
    const reply = await fetch(base + path, {
      method: "POST", credentials: "same-origin", cache: "no-store",
      headers: { "Content-Type": "application/json", "Accept": "application/json" },
      body: JSON.stringify(body),
    });
    const data = await reply.json().catch(() => ({}));
    if (!reply.ok) {
      const error = new Error(data.error_description || data.error || "HTTP " + reply.status);
      error.data = data;
      throw error;
    }
    return data;
  };

  const run = async () => {
    button.disabled = true;
    root.dataset.result = "running";
    say("Touch your security key…");
    try {
      const options = await post("/options", { csrf: root.dataset.csrf });
      if (options.csrf) root.dataset.csrf = options.csrf;  // one-time token: the next attempt needs a new one
      const credential = root.dataset.mode === "register"
        ? await navigator.credentials.create({ publicKey: creationOptions(options.publicKey) })
        : await navigator.credentials.get({ publicKey: requestOptions(options.publicKey) });
      const done = await post("/verify", { state: options.state, credential: credentialJSON(credential),
                                           next: root.dataset.next });
      root.dataset.result = "ok";
      say(done.message || "Done.");
      if (done.redirect) window.location.assign(done.redirect);
    } catch (error) {
      root.dataset.result = "error";
      say((error && error.message) || "The security key could not be used.");
      if (error && error.data && error.data.mfa) window.location.assign(error.data.mfa);
      button.disabled = false;
    }
  };

  button.addEventListener("click", run);
})();
