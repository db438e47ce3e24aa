// The worklist page's few behaviours htmx does not cover (no inline script: strict CSP).
// Sorting and paging (next: after a row, previous: before one) set the filter form's hidden
// fields and submit it (htmx posts it);
// a click or Enter on a row opens its study; the rows are reloaded by htmx itself.
(function () {
  "use strict";

  function form() { return document.getElementById("filters"); }

  function submit(after, before) {
    var f = form();
    if (!f) return;
    f.elements.after.value = after || "";
    f.elements.before.value = before || "";
    f.requestSubmit();
  }

  document.addEventListener("click", function (event) {
    var target = event.target;
    if (!(target instanceof Element)) return;
    var sort = target.closest("button.sort");
    if (sort) {
      var f = form();
      var key = sort.getAttribute("data-sort");
      var same = f.elements.sort.value === key;
      f.elements.desc.value = same && !f.elements.desc.value ? "on" : "";
      f.elements.sort.value = key;
      submit("");
      return;
    }
    var pager = target.closest(".wl-pager button");
    if (pager) {
      submit(pager.getAttribute("data-after"), pager.getAttribute("data-before"));
      window.scrollTo(0, 0);
      return;
    }
    if (target.closest("a, button, input, select, label")) return;
    var row = target.closest("tr.wl-row");
    if (row && row.dataset.open) window.location.assign(row.dataset.open);
  });

  // Keyboard on a focused row: Enter opens it, arrows move to the next or previous row, C claims it.
  document.addEventListener("keydown", function (event) {
    var target = event.target;
    if (!(target instanceof Element) || !target.matches("tr.wl-row")) return;
    if (event.key === "Enter") {
      window.location.assign(target.getAttribute("data-open"));
    } else if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      var next = event.key === "ArrowDown" ? target.nextElementSibling : target.previousElementSibling;
      if (next && next.matches("tr.wl-row")) {
        next.focus();
        event.preventDefault();
      }
    } else if ((event.key === "c" || event.key === "C") && !event.ctrlKey && !event.metaKey && !event.altKey) {
      var claim = target.querySelector("button.claim");
      if (claim) claim.click();
    }
  });

  // A row swapped in after a claim keeps the keyboard focus where it was.
  document.addEventListener("htmx:afterSwap", function (event) {
    var swapped = event.detail && event.detail.target;
    if (swapped instanceof Element && swapped.id && document.activeElement === document.body) {
      var row = document.getElementById(swapped.id);
      if (row && row.matches("tr.wl-row")) row.focus();
    }
  });

  // A change of a filter starts again from the first page.
  document.addEventListener("change", function (event) {
    var target = event.target;
    if (target instanceof Element && target.closest("#filters") && form().elements.after) {
      form().elements.after.value = "";
      form().elements.before.value = "";
    }
  }, true);
  document.addEventListener("input", function (event) {
    var target = event.target;
    if (target instanceof Element && target.id === "f-q") {
      form().elements.after.value = "";
      form().elements.before.value = "";
    }
  }, true);
})();
