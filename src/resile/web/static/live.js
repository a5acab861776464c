// resile dashboard: live regions and small conveniences. The pages work without this file.
//
// * An element with data-live="URL" is refreshed from the server-sent events at URL: each
//   "update" event carries the region's new HTML, rendered (and escaped) by the server.
//   While a checkbox in the region is ticked or a control in it has focus, updates wait,
//   so a selection never moves under the operator's hand.
// * A form or button with data-confirm="question" asks before it submits.
// * A checkbox with data-select-all ticks every other checkbox of its table.
(function () {
  "use strict";

  var state = document.getElementById("live-state");

  function busy(region) {
    if (region.querySelector("input[type=checkbox]:checked")) return true;
    // A focused control (a keyboard user on a button, someone typing) is not swapped away;
    // a checkbox keeps the focus after a click, and counts only while ticked (above).
    var active = document.activeElement;
    if (active === null || active === document.body || !region.contains(active)) return false;
    if (active.tagName === "INPUT") return active.type !== "checkbox";
    return active.tagName === "SELECT" || active.tagName === "BUTTON";
  }

  function showSelectAll(region) {
    region.querySelectorAll("[data-select-all]").forEach(function (box) { box.hidden = false; });
  }

  function connect(region) {
    var pending = null;
    var note = document.createElement("p");
    note.className = "paused-note";
    note.textContent = "Live updates wait while tasks are selected.";
    note.hidden = true;
    region.parentNode.insertBefore(note, region);

    function apply(html) {
      region.innerHTML = html;
      showSelectAll(region);
      region.dispatchEvent(new CustomEvent("live:updated", { bubbles: true }));
    }

    var source = new EventSource(region.getAttribute("data-live"));
    source.addEventListener("update", function (event) {
      if (busy(region)) {
        pending = event.data;
        note.hidden = false;
        return;
      }
      pending = null;
      note.hidden = true;
      apply(event.data);
    });
    source.addEventListener("open", function () {
      if (state) { state.hidden = false; state.classList.remove("off"); state.textContent = "live"; }
    });
    source.addEventListener("error", function () {
      if (state) { state.classList.add("off"); state.textContent = "reconnecting"; }
    });
    region.addEventListener("change", function () {
      if (pending !== null && !busy(region)) {
        var html = pending;
        pending = null;
        note.hidden = true;
        apply(html);
      }
    });
  }

  document.querySelectorAll("[data-live]").forEach(function (region) {
    showSelectAll(region);
    if (window.EventSource) connect(region);
  });

  document.addEventListener("change", function (event) {
    var box = event.target;
    if (!box.matches || !box.matches("[data-select-all]")) return;
    var table = box.closest("table");
    if (!table) return;
    table.querySelectorAll("tbody input[type=checkbox]").forEach(function (other) {
      other.checked = box.checked;
    });
  });

  document.addEventListener("submit", function (event) {
    var button = event.submitter;
    var question = (button && button.getAttribute("data-confirm")) ||
      event.target.getAttribute("data-confirm");
    if (question && !window.confirm(question)) event.preventDefault();
  });
})();
