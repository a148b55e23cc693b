// The image grid's selection: "select all on this page", shift-click to select a range, a running count, and a
// confirmation before deleting. Listeners sit on the document because htmx swaps the grid when filters change.
// Selecting across pages needs no script: the "Apply to all N" button sends the filter to the server.
(function () {
  "use strict";
  let last = null;  // the box clicked last: one end of a shift-click range
  // Ticked image ids survive the grid reloading itself while thumbnails are made (same filter, same page).
  const ticked = new Set();

  const boxes = (form) => Array.from(form.querySelectorAll("input[name=image_ids]"));

  function sync(form) {
    const all = boxes(form);
    all.forEach((box) => { if (box.checked) ticked.add(box.value); else ticked.delete(box.value); });
    const selected = all.filter((box) => box.checked).length;
    const page = form.querySelector("#select-page");
    const count = form.querySelector("#selected-count");
    if (page) {
      page.checked = selected > 0 && selected === all.length;
      page.indeterminate = selected > 0 && selected < all.length;
    }
    if (count) count.textContent = selected ? selected + " selected" : "";
  }

  document.addEventListener("click", (event) => {
    const box = event.target.closest("#bulk input[name=image_ids]");
    if (!box) return;
    const all = boxes(box.form);
    if (event.shiftKey && last && last !== box && all.includes(last)) {
      const [from, to] = [all.indexOf(last), all.indexOf(box)].sort((a, b) => a - b);
      all.slice(from, to + 1).forEach((other) => { other.checked = box.checked; });
    }
    last = box;
    sync(box.form);
  });

  document.addEventListener("change", (event) => {
    if (event.target.id !== "select-page") return;
    const form = event.target.form;
    boxes(form).forEach((box) => { box.checked = event.target.checked; });
    sync(form);
  });

  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (form.id !== "bulk" || form.elements.action.value !== "delete") return;
    const everything = event.submitter && event.submitter.value === "filter";
    const count = everything ? event.submitter.dataset.count : boxes(form).filter((box) => box.checked).length;
    if (!window.confirm("Delete " + count + " image(s) with their masks? This cannot be undone.")) {
      event.preventDefault();
    }
  });

  document.addEventListener("htmx:afterSwap", (event) => {
    const form = document.getElementById("bulk");
    if (!form) return;
    if (event.detail.target.id === "grid") {  // another filter: a new selection
      ticked.clear();
      last = null;
      return;
    }
    const anchor = last && last.value;
    boxes(form).forEach((box) => { box.checked = ticked.has(box.value); });
    last = boxes(form).find((box) => box.value === anchor) || null;
    sync(form);
  });

  document.documentElement.dataset.gridReady = "1";  // tests wait for this before clicking
})();
