// Review queue keys: a accept, g good, d defect, m edit the mask, s skip, h heatmap. Ignored while typing.
document.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey || event.target.closest("input, select, textarea")) return;
  if (event.key === "h") {
    const toggle = document.getElementById("heat-toggle");
    if (toggle) toggle.checked = !toggle.checked;
    return;
  }
  const control = document.querySelector(`#review-item [data-key="${event.key}"]`);
  if (!control || control.dataset.busy) return;
  control.dataset.busy = "1"; // one key press, one decision
  event.preventDefault();
  control.click();
});

document.querySelectorAll("#review-filters select").forEach((select) => {
  select.addEventListener("change", () => select.form.submit());
});
