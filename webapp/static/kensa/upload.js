// Upload with a progress bar: files go up in batches (so 500 images never make one giant request) and each
// batch's result lines are appended as they come back. Without JavaScript the form still posts normally.
(function () {
  "use strict";
  const form = document.getElementById("upload-form");
  if (!form) return;
  const input = document.getElementById("files");
  const zone = document.getElementById("dropzone");
  const bar = document.getElementById("upload-progress");
  const status = document.getElementById("upload-status");
  const results = document.getElementById("upload-results");
  const batchSize = Number(form.dataset.batchSize || 25);
  const csrf = form.querySelector("input[name=csrfmiddlewaretoken]").value;

  ["dragenter", "dragover"].forEach((type) =>
    zone.addEventListener(type, (event) => { event.preventDefault(); zone.classList.add("over"); }));
  ["dragleave", "drop"].forEach((type) =>
    zone.addEventListener(type, () => zone.classList.remove("over")));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    upload(Array.from(event.dataTransfer.files));
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    upload(Array.from(input.files));
  });
  form.dataset.ready = "1";  // the handlers are attached (tests wait for this before dropping files)

  function batches(files) {
    // Archives travel alone: each one can be large and is unpacked on the server.
    const out = [];
    let current = [];
    for (const file of files) {
      if (/\.zip$/i.test(file.name)) { out.push([file]); continue; }
      current.push(file);
      if (current.length === batchSize) { out.push(current); current = []; }
    }
    if (current.length) out.push(current);
    return out;
  }

  function serverStage(batch) {
    // What the server does between the last byte sent and its answer: a zip is unpacked and each image checked.
    const archive = batch.length === 1 && /\.zip$/i.test(batch[0].name);
    return "Upload complete — the server is " + (archive ? "unpacking and checking " + batch[0].name :
      "checking and storing " + batch.length + " file(s)") + "…";
  }

  function send(batch, onProgress, onSent) {
    return new Promise((resolve, reject) => {
      const data = new FormData();
      batch.forEach((file) => data.append("files", file, file.name));
      const xhr = new XMLHttpRequest();
      xhr.open("POST", form.action || window.location.href);
      xhr.setRequestHeader("X-CSRFToken", csrf);
      xhr.setRequestHeader("HX-Request", "true");
      xhr.upload.addEventListener("progress", (e) => { if (e.lengthComputable) onProgress(e.loaded); });
      xhr.upload.addEventListener("load", onSent);
      xhr.onload = () => (xhr.status === 200 ? resolve(xhr.responseText) :
        reject(new Error("the server answered " + xhr.status)));
      xhr.onerror = () => reject(new Error("the connection failed"));
      xhr.send(data);
    });
  }

  async function upload(files) {
    if (!files.length) { status.textContent = "Choose or drop some files first."; return; }
    const total = files.reduce((sum, f) => sum + f.size, 0) || 1;
    let done = 0;
    bar.hidden = false;
    bar.value = 0;
    form.classList.add("busy");
    for (const batch of batches(files)) {
      const size = batch.reduce((sum, f) => sum + f.size, 0);
      status.textContent = "Uploading " + batch.length + " file(s)…";
      try {
        const html = await send(batch, (loaded) => { bar.value = (100 * (done + loaded)) / total; }, () => {
          // Every byte is sent but nothing is stored yet: say what the server is doing, and let the bar show
          // activity (indeterminate) instead of a finished 100 %.
          status.textContent = serverStage(batch);
          bar.removeAttribute("value");
        });
        results.insertAdjacentHTML("beforeend", html);
      } catch (error) {
        const names = batch.map((f) => f.name).join(", ");
        results.insertAdjacentHTML("beforeend", "<p class=\"error\"></p>");
        results.lastElementChild.textContent = "Not uploaded (" + error.message + "): " + names;
      }
      done += size;
      bar.value = (100 * done) / total;
    }
    form.classList.remove("busy");
    const count = (attr) => Array.from(results.querySelectorAll(".upload-report"))
      .reduce((sum, el) => sum + Number(el.dataset[attr] || 0), 0);
    status.textContent = "Done: " + count("added") + " added, " + count("duplicates") + " already present, " +
      count("rejected") + " rejected.";
    input.value = "";
  }
})();
