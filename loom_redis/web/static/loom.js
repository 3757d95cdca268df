// loom-redis dashboard: the little htmx leaves to a page.
(function () {
  // A history row already on the page (loaded by paging, then pushed live) is not added twice.
  document.addEventListener("htmx:sseBeforeMessage", function (event) {
    var id = event.detail && event.detail.lastEventId;
    if (event.detail.type === "event" && id && document.getElementById("ev-" + id)) {
      event.preventDefault();
    }
  });
  // The filter form's times are the browser's local time; the server takes ms since the epoch.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    form.querySelectorAll("input[data-ms]").forEach(function (input) {
      var target = form.querySelector("input[name=" + input.dataset.ms + "]");
      if (target) { target.value = input.value ? String(new Date(input.value).getTime()) : ""; }
    });
  });
})();
