// My profile: a two-view single-page app. Views switch with history.pushState (no page load); data is
// loaded from and saved to /api/profile as JSON.
(() => {
  "use strict";
  const FIELDS = ["display_name", "phone", "department", "bio"];
  const status = document.getElementById("profile-status");
  const form = document.getElementById("profile-form");
  let profile = {};

  function viewFor(path) { return path.replace(/\/+$/, "") === "/profile/edit" ? "edit" : "view"; }

  function render(view) {
    for (const name of ["view", "edit"]) {
      document.getElementById("view-" + name).hidden = name !== view;
      document.getElementById("tab-" + name).classList.toggle("active", name === view);
    }
    for (const f of FIELDS) {
      document.getElementById("show-" + f).textContent = profile[f] || "-";
      if (view === "edit") form.elements[f].value = profile[f] || "";
    }
    document.title = (view === "edit" ? "Edit profile" : "My profile") + " · Acme Intranet";
  }

  function go(view, push) {
    if (push) history.pushState({ view }, "", view === "edit" ? "/profile/edit" : "/profile");
    render(view);
  }

  document.addEventListener("click", (e) => {
    const link = e.target.closest("a[data-view]");
    if (!link) return;
    e.preventDefault();
    go(link.dataset.view, true);
  });
  window.addEventListener("popstate", () => render(viewFor(location.pathname)));

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = {};
    for (const f of FIELDS) body[f] = form.elements[f].value;
    status.textContent = "saving…";
    try {
      const r = await fetch("/api/profile", {
        method: "PUT", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
      });
      const data = await r.json();
      if (!r.ok) { status.textContent = "not saved: " + (data.error || r.status); return; }
      profile = data.profile;
      status.textContent = "saved";
      go("view", true);
    } catch (err) {
      status.textContent = "not saved: " + err;
    }
  });

  fetch("/api/profile").then((r) => r.json()).then((data) => {
    profile = data.profile || {};
    render(viewFor(location.pathname));
    status.textContent = "loaded";
  }).catch((err) => { status.textContent = "could not load profile: " + err; render(viewFor(location.pathname)); });
})();
