/* Live account updates: when the element with data-live-updates-url is on the
   page and the server pushes a change (Server-Sent Events relayed from Redis
   pub/sub by app.services.live_updates.stream), reload to show it. Without
   Redis the stream ends at once and the page stays as it is until reloaded. */
(function () {
  "use strict";
  var root = document.querySelector("[data-live-updates-url]");
  if (!root || typeof window.EventSource !== "function") { return; }
  var source = new window.EventSource(root.getAttribute("data-live-updates-url"));
  source.onmessage = function () {
    source.close();
    window.location.reload();
  };
  // When a stream ends (each lasts ~20 s) or Redis is away, EventSource waits the
  // server-given retry delay (30 s) and reconnects by itself.
}());
