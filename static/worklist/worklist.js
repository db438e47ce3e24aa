// The worklist page's few behaviours htmx does not cover (no inline script: strict CSP).
// Sorting and paging set the filter form's hidden fields and submit it (htmx posts it);
// a click or Enter on a row opens its study; the rows are reloaded by htmx itself.
(function () {
  "use strict";

  function form() { return document.getElementById("filters"); }

  function submit(after) {
    var f = form();
    if (!f) return;
    f.elements.after.value = after || "";
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
      submit(pager.getAttribute("data-after"));
      window.scrollTo(0, 0);
      return;
    }
    if (target.closest("a, button, input, select, label")) return;
    var row = target.closest("tr.wl-row");
    if (row && row.dataset.open) window.location.assign(row.dataset.open);
  });

  document.addEventListener("keydown", function (event) {
    var target = event.target;
    if (event.key === "Enter" && target instanceof Element && target.matches("tr.wl-row")) {
      window.location.assign(target.getAttribute("data-open"));
    }
  });

  // A change of a filter starts again from the first page.
  document.addEventListener("change", function (event) {
    var target = event.target;
    if (target instanceof Element && target.closest("#filters") && form().elements.after) {
      form().elements.after.value = "";
    }
  }, true);
  document.addEventListener("input", function (event) {
    var target = event.target;
    if (target instanceof Element && target.id === "f-q") form().elements.after.value = "";
  }, true);
})();
