// The dashboard follows the server's event stream (`GET /api/events/stream`, server-sent
// events, authenticated by the session cookie): when events arrive it asks htmx to refresh
// `#live` ("muster:events" on the body), half a second after the first event of a burst and at
// most once every two seconds while events keep coming. An idle fleet costs no refreshes; the
// slow poll in live.html stays as the safety net. `data-live` on the body says whether the
// stream is open (the browser reconnects by itself, resuming with Last-Event-ID).
(() => {
  if (!document.getElementById("live") || !("EventSource" in window)) return;
  const SETTLE_MS = 500;
  const EVERY_MS = 2000;
  let last = 0;
  let timer = null;
  const refresh = () => {
    timer = null;
    last = Date.now();
    htmx.trigger(document.body, "muster:events");
  };
  const stream = new EventSource("/api/events/stream");
  stream.onopen = () => {
    document.body.dataset.live = "streaming";
  };
  stream.onerror = () => {
    document.body.dataset.live = "reconnecting";
  };
  stream.onmessage = () => {
    if (timer !== null) return;
    const wait = Math.max(SETTLE_MS, last + EVERY_MS - Date.now());
    timer = setTimeout(refresh, wait);
  };
})();
