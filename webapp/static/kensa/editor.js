// The annotation editor: the one JavaScript island. Each defect class is drawn on an offscreen canvas at the
// image's full resolution (so nothing is lost on save) and the screen shows them scaled; a frame is only
// redrawn on the next animation frame, so a 4096 x 4096 image stays responsive while drawing. Saves send the
// changed classes as PNG blobs with the image's annotation version; the server refuses a stale version (409).
(function () {
  "use strict";
  const root = document.getElementById("editor");
  if (!root) return;
  const config = JSON.parse(document.getElementById("editor-config").textContent);
  const canvas = document.getElementById("editor-canvas");
  const stage = document.getElementById("stage");
  const ctx = canvas.getContext("2d");
  const statusEl = document.getElementById("save-status");
  const note = document.getElementById("stage-note");
  const W = config.width;
  const H = config.height;
  const AUTOSAVE_MS = 1200;
  const MIN_BOX = 2; // a click, not a drag, selects instead of drawing a box

  const state = {
    tool: "brush",
    brush: Math.max(3, Math.round(Math.min(W, H) / 80)),
    opacity: 0.5,
    active: 0,
    label: config.label,
    version: config.version,
    labelDirty: false,
    saving: false,
    conflict: false,
    scale: 1,
    ox: 0,
    oy: 0,
    pointer: null, // last pointer position in image pixels
    spaceHeld: false,
  };
  const layers = config.layers.map((layer) => ({
    ...layer,
    boxes: layer.boxes.map((b) => b.slice()),
    canvas: null, // created when a mask is loaded or first drawn
    painted: false, // may hold pixels (false: certainly empty)
    rgb: hexToRgb(layer.colour),
  }));
  const dirty = new Set(); // layers changed since the last successful save
  const undoStack = [];
  const redoStack = [];
  let gesture = null; // the stroke, box or pan in progress
  let saveTimer = null;
  let frameRequested = false;
  let scratch = null; // a copy of a layer taken when a stroke starts, for its undo patch

  const photo = new Image();
  const csrf = JSON.parse(document.body.getAttribute("hx-headers") || "{}")["x-csrftoken"] || "";

  // --- geometry -------------------------------------------------------------------------------------------

  function hexToRgb(hex) {
    const value = parseInt(hex.slice(1), 16);
    return [(value >> 16) & 255, (value >> 8) & 255, value & 255];
  }

  function toImage(event) {
    const rect = canvas.getBoundingClientRect();
    return { x: (event.clientX - rect.left - state.ox) / state.scale, y: (event.clientY - rect.top - state.oy) / state.scale };
  }

  function fit() {
    const width = stage.clientWidth;
    const height = stage.clientHeight;
    state.scale = Math.min(width / W, height / H) * 0.96;
    state.ox = (width - W * state.scale) / 2;
    state.oy = (height - H * state.scale) / 2;
    requestFrame();
  }

  function zoomAt(cssX, cssY, factor) {
    const fitScale = Math.min(stage.clientWidth / W, stage.clientHeight / H);
    const scale = Math.min(64, Math.max(fitScale / 4, state.scale * factor));
    state.ox = cssX - ((cssX - state.ox) * scale) / state.scale;
    state.oy = cssY - ((cssY - state.oy) * scale) / state.scale;
    state.scale = scale;
    requestFrame();
  }

  function resize() {
    const dpr = window.devicePixelRatio || 1;
    canvas.width = Math.round(stage.clientWidth * dpr);
    canvas.height = Math.round(stage.clientHeight * dpr);
    canvas.style.width = stage.clientWidth + "px";
    canvas.style.height = stage.clientHeight + "px";
    requestFrame();
  }

  // --- drawing on screen ----------------------------------------------------------------------------------

  function requestFrame() {
    if (frameRequested) return;
    frameRequested = true;
    requestAnimationFrame(render);
  }

  function render() {
    frameRequested = false;
    const dpr = window.devicePixelRatio || 1;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    ctx.setTransform(dpr * state.scale, 0, 0, dpr * state.scale, dpr * state.ox, dpr * state.oy);
    ctx.imageSmoothingEnabled = state.scale < 1; // zoomed in, pixels stay square so edges can be judged
    if (photo.complete && photo.naturalWidth) ctx.drawImage(photo, 0, 0, W, H);
    ctx.globalAlpha = state.opacity;
    for (const layer of layers) if (layer.canvas && layer.painted) ctx.drawImage(layer.canvas, 0, 0);
    ctx.globalAlpha = 1;
    const line = 1 / state.scale;
    layers.forEach((layer, index) => {
      ctx.strokeStyle = layer.colour;
      ctx.lineWidth = (index === state.active ? 2.5 : 1.5) * line;
      for (const [x0, y0, x1, y1] of layer.boxes) ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
    });
    if (gesture && gesture.kind === "box") {
      const b = boxOf(gesture);
      ctx.setLineDash([6 * line, 4 * line]);
      ctx.strokeStyle = gesture.layer.colour;
      ctx.lineWidth = 2 * line;
      ctx.strokeRect(b[0], b[1], b[2] - b[0], b[3] - b[1]);
      ctx.setLineDash([]);
    }
    if (state.pointer && (state.tool === "brush" || state.tool === "eraser") && config.canEdit && !gesture?.pan) {
      ctx.beginPath();
      ctx.arc(state.pointer.x, state.pointer.y, state.brush / 2, 0, 2 * Math.PI);
      ctx.lineWidth = 1.5 * line;
      ctx.strokeStyle = "rgba(0,0,0,.8)";
      ctx.stroke();
      ctx.lineWidth = 0.75 * line;
      ctx.strokeStyle = "#fff";
      ctx.stroke();
    }
    // Tests (and curious people) read the view to map image pixels to the screen.
    canvas.dataset.view = JSON.stringify({ scale: state.scale, ox: state.ox, oy: state.oy });
  }

  // --- layers ---------------------------------------------------------------------------------------------

  function layerCanvas(layer) {
    if (!layer.canvas) {
      layer.canvas = document.createElement("canvas");
      layer.canvas.width = W;
      layer.canvas.height = H;
    }
    return layer.canvas;
  }

  function loadMask(layer) {
    // Stored masks are grey PNGs of 0 and 255; on screen a class is its colour with alpha where the mask is set.
    return new Promise((resolve) => {
      const picture = new Image();
      picture.onload = () => {
        const c = layerCanvas(layer).getContext("2d");
        c.drawImage(picture, 0, 0, W, H);
        const pixels = c.getImageData(0, 0, W, H);
        const data = pixels.data;
        const [r, g, b] = layer.rgb;
        for (let i = 0; i < data.length; i += 4) {
          const on = data[i] > 127;
          data[i] = r;
          data[i + 1] = g;
          data[i + 2] = b;
          data[i + 3] = on ? 255 : 0;
        }
        c.putImageData(pixels, 0, 0);
        layer.painted = true;
        resolve();
      };
      picture.onerror = () => {
        showNote("The mask of " + layer.name + " could not be loaded.");
        resolve();
      };
      picture.src = layer.maskUrl;
    });
  }

  function layerIsEmpty(layer) {
    if (layer.boxes.length) return false;
    if (!layer.canvas || !layer.painted) return true;
    const data = layer.canvas.getContext("2d").getImageData(0, 0, W, H).data;
    for (let i = 3; i < data.length; i += 4) if (data[i] > 127) return false;
    layer.painted = false;
    return true;
  }

  function hasDrawings() {
    return layers.some((layer) => !layerIsEmpty(layer));
  }

  function activeLayer() {
    return layers[state.active] || null;
  }

  // --- gestures -------------------------------------------------------------------------------------------

  function canDraw() {
    if (!config.canEdit || !activeLayer()) {
      if (config.canEdit) showNote("Add a defect class in Settings to draw masks and boxes.");
      return false;
    }
    if (!root.dataset.ready || root.dataset.ready === "0") return false;
    return true;
  }

  function strokeBegin(point) {
    const layer = activeLayer();
    const target = layerCanvas(layer);
    if (!scratch) {
      scratch = document.createElement("canvas");
      scratch.width = W;
      scratch.height = H;
    }
    const copy = scratch.getContext("2d");
    copy.clearRect(0, 0, W, H);
    copy.drawImage(target, 0, 0);
    gesture = { kind: "stroke", layer, erase: state.tool === "eraser", last: point, minX: W, minY: H, maxX: 0, maxY: 0 };
    strokeTo(point);
  }

  function strokeTo(point) {
    const g = gesture;
    const c = g.layer.canvas.getContext("2d");
    c.save();
    c.globalCompositeOperation = g.erase ? "destination-out" : "source-over";
    c.strokeStyle = g.layer.colour;
    c.lineWidth = state.brush;
    c.lineCap = "round";
    c.lineJoin = "round";
    c.beginPath();
    c.moveTo(g.last.x, g.last.y);
    c.lineTo(point.x, point.y);
    c.stroke();
    c.restore();
    const pad = state.brush / 2 + 2;
    g.minX = Math.min(g.minX, point.x - pad, g.last.x - pad);
    g.minY = Math.min(g.minY, point.y - pad, g.last.y - pad);
    g.maxX = Math.max(g.maxX, point.x + pad, g.last.x + pad);
    g.maxY = Math.max(g.maxY, point.y + pad, g.last.y + pad);
    g.last = point;
    if (!g.erase) g.layer.painted = true;
    requestFrame();
  }

  function strokeEnd() {
    const g = gesture;
    gesture = null;
    const x = Math.max(0, Math.floor(g.minX));
    const y = Math.max(0, Math.floor(g.minY));
    const w = Math.min(W, Math.ceil(g.maxX)) - x;
    const h = Math.min(H, Math.ceil(g.maxY)) - y;
    if (w <= 0 || h <= 0) return;
    // Only the touched rectangle is kept for undo, so long sessions on large images stay light.
    const before = scratch.getContext("2d").getImageData(x, y, w, h);
    const after = g.layer.canvas.getContext("2d").getImageData(x, y, w, h);
    commit({ kind: "pixels", layer: g.layer, x, y, before, after }, !g.erase);
  }

  function boxOf(g) {
    const clampX = (v) => Math.min(W, Math.max(0, Math.round(v)));
    const clampY = (v) => Math.min(H, Math.max(0, Math.round(v)));
    return [
      clampX(Math.min(g.start.x, g.end.x)),
      clampY(Math.min(g.start.y, g.end.y)),
      clampX(Math.max(g.start.x, g.end.x)),
      clampY(Math.max(g.start.y, g.end.y)),
    ];
  }

  function boxEnd() {
    const g = gesture;
    gesture = null;
    const box = boxOf(g);
    if (box[2] - box[0] >= MIN_BOX && box[3] - box[1] >= MIN_BOX) {
      g.layer.boxes.push(box);
      commit({ kind: "box-add", layer: g.layer, box }, true);
      return;
    }
    // A click inside a box of the active class removes it.
    const p = g.end;
    const index = g.layer.boxes.findIndex(([x0, y0, x1, y1]) => p.x >= x0 && p.x < x1 && p.y >= y0 && p.y < y1);
    if (index >= 0) {
      const [removed] = g.layer.boxes.splice(index, 1);
      commit({ kind: "box-remove", layer: g.layer, box: removed, index }, false);
    }
    requestFrame();
  }

  canvas.addEventListener("contextmenu", (event) => event.preventDefault());
  canvas.addEventListener("pointerdown", (event) => {
    canvas.setPointerCapture(event.pointerId);
    const point = toImage(event);
    if (event.button === 1 || event.button === 2 || state.spaceHeld) {
      gesture = { kind: "pan", pan: true, x: event.clientX, y: event.clientY };
      canvas.classList.add("panning");
      return;
    }
    if (event.button !== 0 || !canDraw()) return;
    if (state.tool === "box") gesture = { kind: "box", layer: activeLayer(), start: point, end: point };
    else strokeBegin(point);
    requestFrame();
  });
  canvas.addEventListener("pointermove", (event) => {
    const point = toImage(event);
    state.pointer = point;
    if (gesture && gesture.kind === "pan") {
      state.ox += event.clientX - gesture.x;
      state.oy += event.clientY - gesture.y;
      gesture.x = event.clientX;
      gesture.y = event.clientY;
    } else if (gesture && gesture.kind === "stroke") {
      // Coalesced events keep fast strokes smooth without drawing more often than the browser delivers.
      const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
      for (const e of events.length ? events : [event]) strokeTo(toImage(e));
    } else if (gesture && gesture.kind === "box") {
      gesture.end = point;
    }
    requestFrame();
  });
  const finish = () => {
    if (!gesture) return;
    if (gesture.kind === "stroke") strokeEnd();
    else if (gesture.kind === "box") boxEnd();
    else gesture = null;
    canvas.classList.remove("panning");
    requestFrame();
  };
  canvas.addEventListener("pointerup", finish);
  canvas.addEventListener("pointercancel", finish);
  canvas.addEventListener("pointerleave", () => {
    state.pointer = null;
    requestFrame();
  });
  canvas.addEventListener(
    "wheel",
    (event) => {
      event.preventDefault();
      const rect = canvas.getBoundingClientRect();
      zoomAt(event.clientX - rect.left, event.clientY - rect.top, Math.exp(-event.deltaY * 0.0015));
    },
    { passive: false },
  );

  // --- history --------------------------------------------------------------------------------------------

  function commit(entry, makesDefect) {
    if (makesDefect && state.label !== "defect") {
      entry.labelBefore = state.label;
      entry.labelAfter = "defect";
      setLabelValue("defect");
    }
    undoStack.push(entry);
    redoStack.length = 0;
    changed(entry);
  }

  function changed(entry) {
    for (const layer of entryLayers(entry)) dirty.add(layer);
    if (entry.labelAfter !== undefined) state.labelDirty = true;
    refreshPanels();
    scheduleSave();
    requestFrame();
  }

  function entryLayers(entry) {
    if (entry.kind === "clear") return entry.parts.map((part) => part.layer);
    return entry.layer ? [entry.layer] : [];
  }

  function apply(entry, undo) {
    if (entry.kind === "pixels") {
      entry.layer.canvas.getContext("2d").putImageData(undo ? entry.before : entry.after, entry.x, entry.y);
      entry.layer.painted = true;
    } else if (entry.kind === "box-add") {
      if (undo) entry.layer.boxes.splice(entry.layer.boxes.indexOf(entry.box), 1);
      else entry.layer.boxes.push(entry.box);
    } else if (entry.kind === "box-remove") {
      if (undo) entry.layer.boxes.splice(entry.index, 0, entry.box);
      else entry.layer.boxes.splice(entry.layer.boxes.indexOf(entry.box), 1);
    } else if (entry.kind === "clear") {
      for (const part of entry.parts) {
        part.layer.boxes = (undo ? part.boxes : []).slice();
        if (part.pixels) {
          const c = part.layer.canvas.getContext("2d");
          c.clearRect(0, 0, W, H);
          if (undo) c.putImageData(part.pixels, 0, 0);
          part.layer.painted = undo;
        }
      }
    }
    if (entry.labelAfter !== undefined) setLabelValue(undo ? entry.labelBefore : entry.labelAfter);
  }

  function undo() {
    const entry = undoStack.pop();
    if (!entry) return;
    apply(entry, true);
    redoStack.push(entry);
    changed(entry);
  }

  function redo() {
    const entry = redoStack.pop();
    if (!entry) return;
    apply(entry, false);
    undoStack.push(entry);
    changed(entry);
  }

  function clearAll() {
    const parts = layers
      .filter((layer) => layer.boxes.length || (layer.canvas && layer.painted))
      .map((layer) => ({
        layer,
        boxes: layer.boxes.slice(),
        pixels: layer.canvas && layer.painted ? layer.canvas.getContext("2d").getImageData(0, 0, W, H) : null,
      }));
    if (!parts.length) return;
    const entry = { kind: "clear", parts };
    apply(entry, false);
    undoStack.push(entry);
    redoStack.length = 0;
    changed(entry);
  }

  // --- label, tools, panels -------------------------------------------------------------------------------

  function setLabelValue(value) {
    state.label = value;
    root.dataset.label = value;
    for (const button of root.querySelectorAll("[data-label]")) {
      button.setAttribute("aria-pressed", String(button.dataset.label === value));
    }
  }

  function chooseLabel(value) {
    if (!config.canEdit || value === state.label) return;
    if (value !== "defect" && hasDrawings()) {
      showNote("This image has drawings, so it is a defect. Clear them (or undo) before calling it " + value + ".");
      return;
    }
    const entry = { kind: "label", labelBefore: state.label, labelAfter: value };
    setLabelValue(value);
    undoStack.push(entry);
    redoStack.length = 0;
    changed(entry);
  }

  function setTool(tool) {
    state.tool = tool;
    root.dataset.tool = tool;
    for (const button of root.querySelectorAll("[data-tool]")) {
      button.setAttribute("aria-pressed", String(button.dataset.tool === tool));
    }
    canvas.dataset.tool = tool;
    requestFrame();
  }

  function setBrush(size) {
    state.brush = Math.max(1, Math.min(256, Math.round(size)));
    root.dataset.brush = String(state.brush);
    const input = document.getElementById("brush-size");
    if (input) input.value = String(state.brush);
    const output = document.getElementById("brush-size-value");
    if (output) output.textContent = String(state.brush);
    requestFrame();
  }

  function setActive(index) {
    if (index < 0 || index >= layers.length) return;
    state.active = index;
    root.dataset.activeClass = String(layers[index].id);
    for (const button of root.querySelectorAll("[data-layer]")) {
      button.setAttribute("aria-pressed", String(Number(button.dataset.layer) === index));
    }
    requestFrame();
  }

  function setOpacity(value) {
    state.opacity = Math.max(0, Math.min(1, value));
    document.getElementById("opacity").value = String(Math.round(state.opacity * 100));
    document.getElementById("opacity-value").textContent = Math.round(state.opacity * 100) + "%";
    requestFrame();
  }

  function refreshPanels() {
    for (const layer of layers) {
      const el = root.querySelector('[data-boxes-for="' + layer.id + '"]');
      if (el) el.textContent = layer.boxes.length ? layer.boxes.length + " box" + (layer.boxes.length > 1 ? "es" : "") : "";
    }
    const undoButton = document.getElementById("undo");
    if (undoButton) undoButton.disabled = !undoStack.length;
    const redoButton = document.getElementById("redo");
    if (redoButton) redoButton.disabled = !redoStack.length;
  }

  let noteTimer = null;
  function showNote(text) {
    note.textContent = text;
    note.hidden = false;
    clearTimeout(noteTimer);
    noteTimer = setTimeout(() => (note.hidden = true), 4000);
  }

  // --- saving ---------------------------------------------------------------------------------------------

  function isDirty() {
    return dirty.size > 0 || state.labelDirty;
  }

  function setStatus(kind, text) {
    statusEl.dataset.state = kind;
    statusEl.textContent = text;
    statusEl.title = text;
  }

  function scheduleSave() {
    if (!config.canEdit || state.conflict) return;
    setStatus("unsaved", "Unsaved changes");
    clearTimeout(saveTimer);
    saveTimer = setTimeout(save, AUTOSAVE_MS);
  }

  function maskBlob(layer) {
    return new Promise((resolve, reject) =>
      layer.canvas.toBlob((blob) => (blob ? resolve(blob) : reject(new Error("the mask could not be encoded"))), "image/png"),
    );
  }

  let inFlight = null;
  async function save() {
    clearTimeout(saveTimer);
    if (!config.canEdit || state.conflict) return !state.conflict;
    if (inFlight) await inFlight; // one save at a time: the next starts from the version the last one got
    if (!isDirty()) {
      if (!state.conflict) setStatus("saved", "Saved");
      return true;
    }
    inFlight = sendChanges();
    try {
      return await inFlight;
    } finally {
      inFlight = null;
    }
  }

  async function sendChanges() {
    const sent = Array.from(dirty);
    const labelWasDirty = state.labelDirty;
    dirty.clear();
    state.labelDirty = false;
    setStatus("saving", "Saving…");
    try {
      const form = new FormData();
      form.append("version", String(state.version));
      form.append("label", state.label);
      form.append("class_ids", sent.map((layer) => layer.id).join(","));
      for (const layer of sent) {
        form.append("boxes_" + layer.id, JSON.stringify(layer.boxes));
        // A mask is always sent at the image's full resolution; the server reads its alpha.
        if (layer.canvas && layer.painted) form.append("mask_" + layer.id, await maskBlob(layer), "mask.png");
      }
      const response = await fetch(config.saveUrl, {
        method: "POST",
        body: form,
        headers: { "X-CSRFToken": csrf },
        credentials: "same-origin",
      });
      if (response.ok) {
        const answer = await response.json();
        state.version = answer.version;
        root.dataset.version = String(answer.version);
        if (answer.label !== state.label && !state.labelDirty) setLabelValue(answer.label);
        if (isDirty()) scheduleSave();
        else setStatus("saved", "Saved");
        return true;
      }
      const text = await response.text();
      sent.forEach((layer) => dirty.add(layer));
      state.labelDirty = state.labelDirty || labelWasDirty;
      if (response.status === 409) {
        state.conflict = true;
        setStatus("conflict", "Not saved: " + text);
        showNote(text);
      } else {
        setStatus("error", "Not saved: " + text.slice(0, 300));
      }
      return false;
    } catch (error) {
      sent.forEach((layer) => dirty.add(layer));
      state.labelDirty = state.labelDirty || labelWasDirty;
      setStatus("error", "Not saved (" + error.message + "); press s to try again.");
      return false;
    }
  }

  async function go(url) {
    if (!url) return;
    if (state.conflict && isDirty()) {
      // The newer save wins; leaving drops this tab's changes, so ask first.
      if (!window.confirm("This image was saved elsewhere; leave without saving your changes?")) return;
      dirty.clear();
      state.labelDirty = false;
    } else if (isDirty() && !(await save())) {
      return; // stay: the status says why
    }
    window.location.href = url;
  }

  window.addEventListener("beforeunload", (event) => {
    if (config.canEdit && isDirty()) event.preventDefault();
  });

  // --- keyboard and controls ------------------------------------------------------------------------------

  const help = document.getElementById("help");
  function toggleHelp(show) {
    help.hidden = show === undefined ? !help.hidden : !show;
  }

  document.addEventListener("keydown", (event) => {
    const target = event.target;
    if (target.matches && target.matches("input[type=text], input[type=number], textarea, select")) return;
    const key = event.key;
    const ctrl = event.ctrlKey || event.metaKey;
    if (ctrl && key.toLowerCase() === "z") {
      event.preventDefault();
      if (event.shiftKey) redo();
      else undo();
      return;
    }
    if (ctrl && key.toLowerCase() === "y") {
      event.preventDefault();
      redo();
      return;
    }
    if (ctrl && key.toLowerCase() === "s") {
      event.preventDefault();
      save();
      return;
    }
    if (ctrl || event.altKey) return;
    const actions = {
      b: () => setTool("brush"),
      e: () => setTool("eraser"),
      r: () => setTool("box"),
      "[": () => setBrush(Math.min(state.brush - 1, state.brush / 1.25)),
      "]": () => setBrush(state.brush * 1.25 + 1),
      g: () => chooseLabel("good"),
      d: () => chooseLabel("defect"),
      s: () => save(),
      j: () => go(config.nav.next),
      ArrowRight: () => go(config.nav.next),
      ArrowDown: () => go(config.nav.next),
      k: () => go(config.nav.previous),
      ArrowLeft: () => go(config.nav.previous),
      ArrowUp: () => go(config.nav.previous),
      u: () => go(config.nav.next_unlabelled),
      "0": () => fit(),
      "?": () => toggleHelp(),
      Escape: () => toggleHelp(false),
      " ": () => (state.spaceHeld = true),
    };
    let action = actions[key] || actions[key.length === 1 ? key.toLowerCase() : key];
    if (!action && /^[1-9]$/.test(key)) action = () => setActive(Number(key) - 1);
    if (!action) return;
    if (target.matches && target.matches("input[type=range]")) target.blur(); // keys act on the editor, not the slider
    event.preventDefault();
    action();
  });
  document.addEventListener("keyup", (event) => {
    if (event.key === " ") state.spaceHeld = false;
  });

  root.querySelectorAll("[data-label]").forEach((b) => b.addEventListener("click", () => chooseLabel(b.dataset.label)));
  root.querySelectorAll("[data-tool]").forEach((b) => b.addEventListener("click", () => setTool(b.dataset.tool)));
  root.querySelectorAll("[data-layer]").forEach((b) => b.addEventListener("click", () => setActive(Number(b.dataset.layer))));
  const on = (id, type, handler) => {
    const el = document.getElementById(id);
    if (el) el.addEventListener(type, handler);
  };
  on("brush-size", "input", (event) => setBrush(Number(event.target.value)));
  on("opacity", "input", (event) => setOpacity(Number(event.target.value) / 100));
  on("undo", "click", undo);
  on("redo", "click", redo);
  on("clear", "click", clearAll);
  on("save", "click", () => save());
  on("help-button", "click", () => toggleHelp());
  help.addEventListener("click", () => toggleHelp(false));
  for (const [id, key] of [["nav-previous", "previous"], ["nav-next", "next"], ["nav-unlabelled", "next_unlabelled"]]) {
    on(id, "click", (event) => {
      event.preventDefault();
      go(config.nav[key]);
    });
  }

  // --- start ----------------------------------------------------------------------------------------------

  setTool("brush");
  setBrush(state.brush);
  setOpacity(state.opacity);
  setActive(0);
  setLabelValue(state.label);
  root.dataset.version = String(state.version);
  refreshPanels();
  new ResizeObserver(() => {
    const first = canvas.width === 0 || !canvas.dataset.view;
    resize();
    if (first) fit();
  }).observe(stage);
  resize();
  fit();
  const photoReady = new Promise((resolve) => {
    photo.onload = resolve;
    photo.onerror = () => {
      showNote("The image could not be loaded.");
      resolve();
    };
  });
  photo.src = config.imageUrl;
  Promise.all([photoReady, ...layers.filter((l) => l.maskUrl).map(loadMask)]).then(() => {
    root.dataset.ready = "1"; // masks are in place: drawing can start (tests wait for this)
    requestFrame();
  });
})();
