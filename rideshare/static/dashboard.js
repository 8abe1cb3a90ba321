// The dashboard's live updates, from its Server-Sent Events route (no polling, no build step).
// 'counts' messages update every [data-queue=Q] [data-count=STATE] in place and, when a queue's
// counts changed, re-fetch its chart fragments (SETTLE_MS after the change, at most every
// CHART_EVERY_MS); on a job's page its own 'state', 'progress' and 'log' messages extend the timeline.
(function () {
  "use strict";
  const body = document.body;
  const streamUrl = body.dataset.stream;
  const CHART_EVERY_MS = 3000;
  const SETTLE_MS = 750;
  const known = new Map(); // queue -> JSON of its last counts
  const chartTimers = new Map();
  const chartFetched = new Map();

  // A bulk action's confirmation arrives open; make it modal where the browser can.
  const confirmDialog = document.getElementById("bulk-confirm");
  if (confirmDialog && confirmDialog.open && confirmDialog.showModal) {
    confirmDialog.close();
    confirmDialog.showModal();
  }

  if (!streamUrl || !window.EventSource) return;

  const live = document.getElementById("live");
  function setLive(on) {
    if (live) live.dataset.live = on ? "on" : "off";
  }

  function mark(el) {
    el.classList.remove("changed");
    void el.offsetWidth; // restart the animation
    el.classList.add("changed");
  }

  function refreshCharts(queue) {
    const frames = document.querySelectorAll(`[data-chart-queue="${queue}"]`);
    if (!frames.length || chartTimers.has(queue)) return;
    const wait = Math.max(SETTLE_MS, (chartFetched.get(queue) || 0) + CHART_EVERY_MS - Date.now());
    chartTimers.set(queue, setTimeout(async () => {
      chartTimers.delete(queue);
      chartFetched.set(queue, Date.now());
      for (const frame of frames) {
        try {
          const response = await fetch(frame.dataset.chartSrc, {credentials: "same-origin"});
          if (response.ok) frame.innerHTML = await response.text();
        } catch (e) { /* keep the chart shown */ }
      }
    }, wait));
  }

  function applyCounts(all) {
    for (const [queue, counts] of Object.entries(all)) {
      const text = JSON.stringify(counts);
      const before = known.get(queue);
      known.set(queue, text);
      for (const [state, value] of Object.entries(counts)) {
        for (const el of document.querySelectorAll(`[data-queue="${queue}"] [data-count="${state}"]`)) {
          if (el.textContent.trim() !== String(value)) {
            el.textContent = value;
            mark(el);
          }
        }
      }
      if (before !== undefined && before !== text) refreshCharts(queue);
    }
    const stamp = document.getElementById("refreshed");
    if (stamp) stamp.textContent = "Updated " + new Date().toLocaleTimeString();
  }

  const jobId = body.dataset.job;
  function onJobEvent(kind, data) {
    if (!jobId || data.jobId !== jobId) return;
    const list = document.getElementById("timeline");
    if (list && data.event !== "snapshot") {
      const item = document.createElement("li");
      item.dataset.kind = kind;
      const at = document.createElement("time");
      const iso = new Date(data.at).toISOString();
      at.title = iso;
      at.textContent = iso.slice(11, 23);
      item.append(at);
      let text = `${data.event} → ${data.state}`;
      if (kind === "progress") text = "progress " + JSON.stringify(data.progress);
      if (kind === "log") text = `[attempt ${data.log.attempt}] ${data.log.line}`;
      item.append(document.createTextNode(text));
      list.append(item);
      mark(item);
    }
    if (kind === "progress") {
      const cell = document.querySelector("#progress code");
      if (cell) cell.textContent = JSON.stringify(data.progress);
    }
    if (kind === "state" && data.state) {
      for (const el of [document.getElementById("state"), document.getElementById("state-badge")]) {
        if (!el || el.textContent === data.state) continue;
        el.textContent = data.state;
        el.className = el.className.split(" ").filter((c) => c === "badge").concat([data.state]).join(" ");
        mark(el);
      }
      const note = document.getElementById("moved-on");
      if (note && data.state !== body.dataset.state) note.hidden = false;
    }
  }

  let retryMs = 1000;
  function connect() {
    const source = new EventSource(streamUrl);
    source.addEventListener("counts", (e) => {
      retryMs = 1000;
      setLive(true);
      applyCounts(JSON.parse(e.data));
    });
    for (const kind of ["state", "progress", "log"]) {
      source.addEventListener(kind, (e) => onJobEvent(kind, JSON.parse(e.data)));
    }
    source.onerror = () => {
      setLive(false);
      // A closed stream (the server's time is up) reconnects by itself; a refused one (503: too
      // many streams, or signed out) does not: try again later.
      if (source.readyState === EventSource.CLOSED) {
        setTimeout(connect, retryMs);
        retryMs = Math.min(retryMs * 2, 30000);
      }
    };
  }
  connect();
})();
