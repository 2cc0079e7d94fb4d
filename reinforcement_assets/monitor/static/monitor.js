// The Monitoring page's live part: poll /api/changes every few seconds, reload the dashboard's
// fragment when a run, a request or the champion changed (and every refresh interval anyway), and
// send the page's writes as JSON to the API. No library: it must work with no internet.
(function () {
  "use strict";
  const body = document.body;
  const pollMs = 1000 * Number(body.dataset.pollSeconds || 2);
  const refreshMs = 1000 * Number(body.dataset.refreshSeconds || 30);
  let lastRefresh = Date.now();

  function dashboard() { return document.getElementById("dashboard"); }

  function showRefreshed() {
    const label = document.getElementById("refreshed");
    if (label) label.textContent = "data as of " + new Date(lastRefresh).toLocaleTimeString();
  }

  async function reload() {
    const live = document.getElementById("live");
    if (!live) return;
    const response = await fetch("/partials/dashboard", {credentials: "same-origin", cache: "no-store"});
    if (!response.ok) throw new Error("refresh failed: " + response.status);
    live.innerHTML = await response.text();
    lastRefresh = Date.now();
    showRefreshed();
  }

  async function poll() {
    try {
      const current = dashboard();
      if (current) {
        const response = await fetch("/api/changes", {credentials: "same-origin", cache: "no-store"});
        const changed = response.ok && (await response.json()).fingerprint !== current.dataset.fingerprint;
        if (changed || Date.now() - lastRefresh >= refreshMs) await reload();
      }
    } catch (error) {
      const label = document.getElementById("refreshed");
      if (label) label.textContent = "not refreshed: " + error.message;
    } finally {
      setTimeout(poll, pollMs);
    }
  }

  async function send(url, payload) {
    const response = await fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json"}, body: JSON.stringify(payload),
    });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(data.error || ("HTTP " + response.status));
    return data;
  }

  const form = document.getElementById("retrain");
  if (form) {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const result = document.getElementById("retrain-result");
      try {
        const queued = await send("/api/requests", {
          reason: document.getElementById("reason").value,
          priority: document.getElementById("priority").value,
          from_scratch: document.getElementById("from_scratch").checked,
        });
        result.className = "result ok";
        result.textContent = "queued request " + queued.id + " (" + queued.priority + ")";
        result.dataset.requestId = queued.id;
        form.reset();
        await reload();
      } catch (error) {
        result.className = "result error";
        result.textContent = "refused: " + error.message;
      }
    });
  }

  document.addEventListener("click", async (event) => {
    const button = event.target.closest("button.cancel, button.rollback");
    if (!button) return;
    try {
      if (button.classList.contains("cancel")) {
        if (!window.confirm("Cancel this request? It will not run.")) return;
        await send("/api/requests/" + encodeURIComponent(button.dataset.requestId) + "/cancel", {});
      } else {
        const version = button.dataset.version;
        const never = button.dataset.everChampion !== "true";
        const reason = window.prompt("Make " + version + " the champion again" +
          (never ? " (it was never champion: the gate did not promote it)" : "") + ". Why?");
        if (reason === null) return;
        await send("/api/rollback", {version: version, reason: reason, force: never});
      }
      await reload();
    } catch (error) {
      window.alert("refused: " + error.message);
    }
  });

  showRefreshed();
  setTimeout(poll, pollMs);
})();
