// Interactive spine keypoint annotation: the page side. Vanilla JS, no external assets.
//
// The server owns the truth (demo/server.py): every action (open, refine, undo, reset) returns the
// full state, which the page draws. Coordinates are (x, y) in original image pixels, which are also
// the SVG user units (the <image> sits at 0,0 with its pixel size), so zoom/pan is the viewBox.
// Requests run one after another (a promise chain); an edit made while a refinement is on its way
// replaces the edits queued before it, so only the newest set of fixed points is sent. Every edit
// carries the version of the state it was made on: if the image changed elsewhere (another tab), the
// server answers 409 with its current state, which the page shows instead ("changed elsewhere: reloaded").
"use strict";

(() => {
  const SVG_NS = "http://www.w3.org/2000/svg";
  const POINT_RADIUS_PX = 5;
  const FIXED_RADIUS_PX = 6;
  const SELECTED_RADIUS_PX = 7;
  const WORST_RADIUS_PX = 10;
  const LABEL_SIZE_PX = 12;
  const DRAG_THRESHOLD_PX = 3;
  const CORNER_ORDER = [0, 1, 3, 2]; // outline: top-left, top-right, bottom-right, bottom-left

  const $ = (selector) => document.querySelector(selector);
  const el = {
    svg: $("#canvas"), image: $("#xray"), outlines: $("#outlines"), labels: $("#labels"),
    marks: $("#marks"), points: $("#points"), placeholder: $("#placeholder"), status: $("#status"),
    file: $("#file"), example: $("#example"), openExample: $("#open-example"), imageName: $("#image-name"),
    undo: $("#undo"), reset: $("#reset"), release: $("#release"), fit: $("#fit"),
    selection: $("#selection"), cobb: $("#cobb tbody"), worst: $("#worst"), modelInfo: $("#model-info"),
    redo: $("#redo"), acceptPoint: $("#accept-point"), acceptVertebra: $("#accept-vertebra"),
    numbers: $("#numbers"), busy: $("#busy"), saveState: $("#save-state"), worklist: $("#worklist"),
    folderSection: $("#folder-section"), folderCount: $("#folder-count"), done: $("#done"),
    exportDataset: $("#export-dataset"), prevImage: $("#prev-image"), nextImage: $("#next-image"),
    brightness: $("#brightness"), contrast: $("#contrast"), invert: $("#invert"),
    showOverlay: $("#show-overlay"), showLabels: $("#show-labels"), autoFix: $("#auto-fix"),
    checkFirstBy: $("#check-first-by"),
  };
  const GRAB_RADIUS_PX = 12; // a press this close to a point grabs the nearest one
  const NUMBERS_MIN_SPACING_PX = 14; // point numbers appear once neighbours are this far apart on screen

  let info = null; // GET /api/info
  let doc = null; // the current state from the server (plus local edits not yet answered)
  let saved = null; // the last state the server answered (what is stored): restored when an edit fails
  let worklist = []; // [{name, status, edits}] of the folder (python demo.py --images DIR)
  let view = null; // viewBox {x, y, w, h} in image pixels
  let selected = null; // index of the selected point
  let drag = null; // pointer gesture in progress
  let chain = Promise.resolve();
  let refineSeq = 0;
  const circles = [];
  const polygons = [];
  const labels = [];
  const rings = [];
  const numbers = [];

  // Exposed for the browser test and for curious users (read only).
  const stats = { refines: 0, lastRefineMs: null, refineMs: [], predicts: 0, errors: 0, conflicts: 0 };
  window.demoStats = stats;
  window.demoState = () => doc;

  // ---------------------------------------------------------------------------------------------
  // server
  // ---------------------------------------------------------------------------------------------
  // -> {body, response}: body is the parsed JSON, or a Blob for other types and when `raw` is set.
  async function api(path, options = {}, raw = false) {
    let response;
    try {
      response = await fetch(path, options);
    } catch (err) {
      throw new Error("The server does not answer (is demo.py still running?)");
    }
    const isJson = (response.headers.get("Content-Type") || "").includes("application/json");
    if (!response.ok) {
      const answer = isJson ? await response.json() : null;
      const error = new Error(answer && answer.error ? answer.error : `HTTP ${response.status}`);
      error.status = response.status;
      error.body = answer;
      throw error;
    }
    const body = isJson && !raw ? await response.json() : await response.blob();
    return { body, response };
  }

  async function postJson(path, payload) {
    const { body } = await api(path, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(payload),
    });
    return body;
  }

  function enqueue(task, onError) {
    chain = chain.then(task).catch((err) => {
      stats.errors += 1;
      setStatus(err.message, true);
      if (onError) return onError(err);
      return undefined;
    });
    return chain;
  }

  function nextFrame() {
    // after the next paint; a tab in the background gets no animation frames, so it waits for none
    // (else opening an image there stalls at "Opening..." until the tab is brought to the front)
    if (document.visibilityState === "hidden") return Promise.resolve();
    return new Promise((resolve) => {
      const fallback = setTimeout(resolve, 200);  // hidden while waiting
      requestAnimationFrame(() => { clearTimeout(fallback); resolve(); });
    });
  }

  function setStatus(text, isError = false) {
    el.status.textContent = text;
    el.status.classList.toggle("error", isError);
  }

  // ---------------------------------------------------------------------------------------------
  // opening images
  // ---------------------------------------------------------------------------------------------
  async function loadInfo() {
    const { body } = await api("/api/info");
    info = body;
    el.modelInfo.textContent = `model ${info.model}: ${info.checkpoint}`;
    $("#untrained-banner").hidden = !info.untrained;
    showUndoLimit();
    el.example.replaceChildren(...info.examples.map((name, i) => new Option(name, String(i))));
    if (info.folder) {
      el.folderSection.hidden = false;
      await loadWorklist();
      const last = localStorage.getItem(`demo:last:${info.folder}`);
      const start = worklist.find((item) => item.name === last) ||
        worklist.find((item) => item.status !== "done") || worklist[0];
      if (start) await openFolderImage(start.name);
    }
  }

  async function loadWorklist() {
    const { body } = await api("/api/worklist");
    worklist = body.images;
    const done = worklist.filter((item) => item.status === "done").length;
    el.folderCount.textContent = `${done} of ${worklist.length} done`;
    el.worklist.replaceChildren(...worklist.map((item) => {
      const li = document.createElement("li");
      li.textContent = item.name;
      li.dataset.name = item.name;
      const badge = document.createElement("span");
      badge.className = `badge ${item.status.replace(" ", "-")}`;
      badge.textContent = item.status;
      li.appendChild(badge);
      li.appendChild(progressBadge(item));
      li.classList.toggle("current", Boolean(doc && doc.name === item.name && doc.persistent));
      li.addEventListener("click", () => enqueue(() => openFolderImage(item.name)));
      return li;
    }));
  }

  async function openFolderImage(name) {
    setStatus(`Opening ${name}…`);
    const t0 = performance.now();
    await startDocument(await postJson("/api/open", { name }), t0);
    localStorage.setItem(`demo:last:${info.folder}`, name);
    await loadWorklist();
  }

  function stepImage(step) {
    if (!worklist.length) return;
    enqueue(async () => {
      const next = nextUnfinished(step);
      if (next) await openFolderImage(next.name);
      else setStatus(`No image ${step > 0 ? "after" : "before"} this one is left to do (all marked done).`);
    });
  }

  function openFile(file) {
    if (!file) return;
    if (info && file.size > info.max_upload_bytes) {
      setStatus(`${file.name} is ${(file.size / 2 ** 20).toFixed(1)} MB; the limit is ` +
        `${(info.max_upload_bytes / 2 ** 20).toFixed(1)} MB.`, true);
      return;
    }
    const form = new FormData();
    form.append("image", file, file.name);
    enqueue(async () => {
      setStatus(`Predicting ${file.name}…`);
      const t0 = performance.now();
      const { body } = await api("/api/predict", { method: "POST", body: form });
      await startDocument(body, t0);
    });
  }

  function openExample(index) {
    enqueue(async () => {
      setStatus("Predicting the example…");
      const t0 = performance.now();
      await startDocument(await postJson("/api/example", { index }), t0);
    });
  }

  async function startDocument(state, t0) {
    refineSeq += 1;
    selected = null;
    drag = null;
    setBusy(false);
    doc = state;
    saved = state;
    markSaved(state);
    el.image.setAttribute("href", state.image_url);
    el.image.setAttribute("width", state.width);
    el.image.setAttribute("height", state.height);
    el.placeholder.hidden = true;
    el.imageName.textContent = `${state.name} (${state.width} × ${state.height} px)`;
    buildOverlay(state.points.length);
    fit();
    updatePanel();
    await nextFrame();
    stats.predicts += 1;
    const notes = (state.notes || []).join(" ");
    setStatus(notes || `${state.action === "predict" ? "Predicted" : "Opened"} ${state.points.length} points in ` +
      `${Math.round(performance.now() - t0)} ms`);
  }

  function markSaved(state) {
    el.saveState.className = "saved";
    el.saveState.textContent = state.persistent ? "All changes saved." : "Not kept after a restart (uploaded image).";
  }

  function markNotSaved(message) {
    el.saveState.className = "not-saved";
    el.saveState.textContent = `NOT saved: ${message}`;
  }

  // ---------------------------------------------------------------------------------------------
  // view: fit, zoom, pan
  // ---------------------------------------------------------------------------------------------
  function fit() {
    if (!doc) return;
    view = { x: 0, y: 0, w: doc.width, h: doc.height };
    applyView();
  }

  function applyView() {
    el.svg.setAttribute("viewBox", `${view.x} ${view.y} ${view.w} ${view.h}`);
    render();
  }

  function unitsPerPixel() {
    const m = el.svg.getScreenCTM();
    return m && m.a ? 1 / m.a : 1;
  }

  function toImage(clientX, clientY) {
    const p = new DOMPoint(clientX, clientY).matrixTransform(el.svg.getScreenCTM().inverse());
    return [p.x, p.y];
  }

  function insideImage([x, y]) {
    return x >= 0 && y >= 0 && x <= doc.width && y <= doc.height;
  }

  function centreOn(index) {
    const [x, y] = doc.points[index];
    view = { ...view, x: x - view.w / 2, y: y - view.h / 2 };
    applyView();
  }

  function zoomAt(clientX, clientY, factor) {
    if (!doc) return;
    const fitScale = Math.max(doc.width, doc.height);
    const w = Math.min(Math.max(view.w / factor, 16), 4 * fitScale);
    factor = view.w / w;
    const p = new DOMPoint(clientX, clientY).matrixTransform(el.svg.getScreenCTM().inverse());
    view = {
      x: p.x - (p.x - view.x) / factor, y: p.y - (p.y - view.y) / factor, w: view.w / factor, h: view.h / factor,
    };
    applyView();
  }

  function zoomCenter(factor) {
    const r = el.svg.getBoundingClientRect();
    zoomAt(r.left + r.width / 2, r.top + r.height / 2, factor);
  }

  // ---------------------------------------------------------------------------------------------
  // drawing
  // ---------------------------------------------------------------------------------------------
  function svgElement(name, attrs, parent) {
    const node = document.createElementNS(SVG_NS, name);
    for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
    parent.appendChild(node);
    return node;
  }

  function buildOverlay(numPoints) {
    if (circles.length === numPoints) return;
    for (const group of [el.outlines, el.labels, el.marks, el.points]) group.replaceChildren();
    circles.length = polygons.length = labels.length = rings.length = 0;
    const numVertebrae = Math.floor(numPoints / 4);
    for (let v = 0; v < numVertebrae; v += 1) {
      polygons.push(svgElement("polygon", { class: "outline" }, el.outlines));
      const text = svgElement("text", { class: "vlabel" }, el.labels);
      text.textContent = info.vertebra_names[v] || `V${v + 1}`;
      labels.push(text);
    }
    for (let i = 0; i < info.least_confident_count; i += 1) {
      rings.push(svgElement("circle", { class: "worst-mark" }, el.marks));
    }
    el.numbers.replaceChildren();
    numbers.length = 0;
    for (let i = 0; i < numPoints; i += 1) {
      const c = svgElement("circle", { class: "kp", id: `kp-${i}`, "data-index": i }, el.points);
      svgElement("title", {}, c);
      circles.push(c);
      const t = svgElement("text", { class: "num", id: `num-${i}` }, el.numbers);
      t.textContent = String(i);
      numbers.push(t);
    }
  }

  function shownPoint(i) {
    if (drag && drag.kind === "point" && drag.moved && drag.index === i) return drag.pos;
    return doc.points[i];
  }

  // Smallest screen distance between two points: dots shrink so that neighbours never overlap (every
  // point stays grabbable at full view), and point numbers appear once there is room for them.
  function minSpacingPx(u) {
    let best = Infinity;
    const pts = doc.points;
    for (let i = 0; i < pts.length; i += 1) {
      for (let j = i + 1; j < pts.length; j += 1) {
        const d = Math.hypot(pts[i][0] - pts[j][0], pts[i][1] - pts[j][1]);
        if (d > 0 && d < best) best = d;
      }
    }
    return best / u;
  }

  function render() {
    if (!doc || !circles.length) return;
    const u = unitsPerPixel();
    const names = info.keypoint_names;
    const spacing = minSpacingPx(u);
    const shrink = Math.min(1, Math.max(0.5, spacing / (2.2 * POINT_RADIUS_PX)));
    const showNumbers = spacing >= NUMBERS_MIN_SPACING_PX;
    el.numbers.style.display = showNumbers || selected !== null ? "" : "none";
    for (let i = 0; i < circles.length; i += 1) {
      const [x, y] = shownPoint(i);
      const c = circles[i];
      const isFixed = Object.prototype.hasOwnProperty.call(doc.fixed, String(i));
      c.setAttribute("cx", x);
      c.setAttribute("cy", y);
      const radius = i === selected ? SELECTED_RADIUS_PX : (isFixed ? FIXED_RADIUS_PX : POINT_RADIUS_PX);
      c.setAttribute("r", radius * shrink * u);
      const isSuggested = !isFixed && (doc.suggested || []).includes(i);
      c.classList.toggle("fixed", isFixed);
      c.classList.toggle("suggested", isSuggested);
      c.classList.toggle("selected", i === selected);
      c.firstChild.textContent = `${names[i]} (#${i}) · ${isFixed ? "fixed by you: never moved" :
        (isSuggested ? "auto-fix suggestion: predicted, accept it (A) or move it" :
          "predicted: the model may still move it")} · confidence ${doc.confidence[i].toFixed(2)}` +
        (doc.error_scores ? ` · error score ${doc.error_scores[i].toFixed(2)}` : "");
      placeNumber(i, x, y, radius, u, showNumbers);
    }
    polygons.forEach((polygon, v) => {
      const corners = CORNER_ORDER.map((k) => shownPoint(4 * v + k));
      polygon.setAttribute("points", corners.map(([x, y]) => `${x},${y}`).join(" "));
      const left = Math.min(corners[0][0], corners[3][0]);
      const midY = (corners[0][1] + corners[3][1]) / 2;
      labels[v].setAttribute("x", left - 8 * u);
      labels[v].setAttribute("y", midY);
      labels[v].setAttribute("font-size", LABEL_SIZE_PX * u);
    });
    const worst = checkFirst();
    rings.forEach((ring, k) => {
      const i = worst[k];
      ring.style.display = i === undefined ? "none" : "";
      if (i === undefined) return;
      const [x, y] = shownPoint(i);
      ring.setAttribute("cx", x);
      ring.setAttribute("cy", y);
      ring.setAttribute("r", WORST_RADIUS_PX * u);
    });
  }

  function updatePanel() {
    const ready = Boolean(doc);
    el.undo.disabled = !ready || !doc.can_undo;
    el.redo.disabled = !ready || !doc.can_redo;
    el.acceptPoint.disabled = !ready || selected === null;
    el.acceptVertebra.disabled = !ready || selected === null;
    $("#accept-visible").disabled = !ready;
    $("#accept-all").disabled = !ready;
    el.done.disabled = !ready || !doc.persistent;
    el.done.textContent = ready && doc.done ? "Mark not done" : "Mark done";
    el.reset.disabled = !ready;
    el.autoFix.disabled = !ready || !hasDetector();
    el.autoFix.title = hasDetector() ?
      "Auto-fix (X): the error detector flags the most suspect points, they are moved and the others " +
      "re-predicted; the moved ones are suggestions (not fixed), Undo takes it back" :
      "Auto-fix needs an error detector: none is loaded (start demo.py with --detector PATH)";
    el.fit.disabled = !ready;
    document.querySelectorAll("button.export").forEach((b) => { b.disabled = !ready; });
    const isFixed = ready && selected !== null && Object.prototype.hasOwnProperty.call(doc.fixed, String(selected));
    el.release.disabled = !isFixed;
    el.svg.classList.toggle("placing", selected !== null);
    el.selection.textContent = selected === null ? "No point selected." :
      `Selected ${info.keypoint_names[selected]} (#${selected}), ${isFixed ? "fixed" : "predicted"}: ` +
      "click its true place.";
    const rows = [];
    if (ready && doc.cobb) {
      doc.cobb.angles.forEach((angle, k) => {
        const tr = document.createElement("tr");
        const [upper, lower] = doc.cobb.vertebrae[k];
        for (const [text, cls] of [[doc.cobb.labels[k], "name"], [`${angle.toFixed(1)}°`, "value"],
          [`${upper}–${lower}`, "ends"]]) {
          const td = document.createElement("td");
          td.textContent = text;
          td.className = cls;
          tr.appendChild(td);
        }
        tr.title = `${doc.cobb.label_names[k]}: between ${upper} and ${lower} (AASCE challenge method)`;
        rows.push(tr);
      });
    } else {
      const tr = document.createElement("tr");
      tr.textContent = ready ? "not available for these points" : "—";
      rows.push(tr);
    }
    el.cobb.replaceChildren(...rows);
    const byDetector = ready && doc.check_first_by === "detector";
    el.checkFirstBy.textContent = !ready ? "" : (byDetector ?
      "Ranked by the error detector: highest error score (more likely wrong) first." :
      "Ranked by confidence: least confident first" + (info.detector ? "." : " (no error detector loaded)."));
    el.worst.replaceChildren(...(ready ? checkFirst() : []).map((i) => {
      const li = document.createElement("li");
      li.dataset.index = String(i);
      li.textContent = byDetector ? `${info.keypoint_names[i]} (score ${doc.error_scores[i].toFixed(2)})` :
        `${info.keypoint_names[i]} (${doc.confidence[i].toFixed(2)})`;
      li.addEventListener("click", () => select(i, true));
      return li;
    }));
  }

  // the points to check first: ranked by the error detector when the server has one, else by confidence
  function checkFirst() {
    return doc.check_first || doc.least_confident || [];
  }

  function hasDetector() {
    return Boolean(info && info.detector);
  }

  function select(index, centre = false) {
    selected = index;
    if (centre && index !== null) centreOn(index);
    render();
    updatePanel();
  }

  // ---------------------------------------------------------------------------------------------
  // editing
  // ---------------------------------------------------------------------------------------------
  function applyState(state) {
    doc = { ...state, image_url: doc.image_url };
    saved = doc;
    markSaved(state);
    render();
    updatePanel();
  }

  // An action failed: show the stored state again (the edit is not drawn as fixed) and say so. A
  // conflict (the image changed elsewhere) brings the server's current state: that is drawn instead.
  function revert(err) {
    if (err.status === 409 && err.body && err.body.conflict && doc && err.body.session === doc.session) {
      refineSeq += 1;
      selected = null;
      applyState(err.body);
      setBusy(false);
      stats.conflicts += 1;
      setStatus("This image was changed elsewhere: reloaded (your last edit was not applied).", true);
      if (doc.persistent && worklist.length) loadWorklist().catch(() => {});
      return;
    }
    markNotSaved(err.message);
    if (saved) {
      refineSeq += 1;
      doc = saved;
      render();
      updatePanel();
    }
    setBusy(false);
  }

  function setBusy(on) {
    document.body.classList.toggle("busy", on);
    el.busy.hidden = !on;
  }

  function requestRefine(t0) {
    const seq = ++refineSeq;
    setBusy(true);
    updatePanel();
    enqueue(async () => {
      if (seq !== refineSeq) return; // a newer edit follows and sends the newer fixed points
      const state = await postJson("/api/refine", { session: doc.session, fixed: doc.fixed, version: doc.version });
      if (seq !== refineSeq) return;
      applyState(state);
      await nextFrame();
      const ms = performance.now() - t0;
      stats.refines += 1;
      stats.lastRefineMs = ms;
      stats.refineMs.push(ms);
      setBusy(false);
      const moved = state.points.length - Object.keys(state.fixed).length;
      setStatus(`Refined ${moved} points in ${Math.round(ms)} ms (model ${Math.round(state.model_ms)} ms)`);
    }, revert);
  }

  function commitFix(index, xy, t0) {
    // a new object: `saved` keeps the server's state for a revert
    doc = { ...doc, fixed: { ...doc.fixed, [String(index)]: [xy[0], xy[1]] },
      points: doc.points.map((p, i) => (i === index ? [xy[0], xy[1]] : p)) };
    render();
    requestRefine(t0);
  }

  function releasePoint(index) {
    if (!doc || !Object.prototype.hasOwnProperty.call(doc.fixed, String(index))) return;
    const fixed = { ...doc.fixed };
    delete fixed[String(index)];
    doc = { ...doc, fixed };
    render();
    requestRefine(performance.now());
  }

  const DONE_MESSAGES = { "/api/undo": "Undone", "/api/redo": "Redone", "/api/reset": "Back to the first prediction",
    "/api/accept": "Checked: these points are fixed now", "/api/done": "Saved" };

  // one automatic revision round: the moved points come back as suggestions (predicted, not fixed)
  function autoFix() {
    if (!doc) return;
    if (!hasDetector()) {
      setStatus("Auto-fix needs an error detector: none is loaded (start demo.py with --detector PATH).", true);
      return;
    }
    setBusy(true);
    enqueue(async () => {
      const state = await postJson("/api/autofix", { session: doc.session, version: doc.version });
      refineSeq += 1;
      setBusy(false);
      applyState(state);
      const names = state.suggested.map((i) => info.keypoint_names[i]).join(", ");
      setStatus(state.suggested.length ? `Auto-fix suggests ${names} (${Math.round(state.model_ms)} ms): ` +
        "check them, accept (A) or move them; Undo takes it back." : "Auto-fix found nothing to move.");
    }, revert);
  }

  function simpleAction(path, extra = {}) {
    if (!doc) return;
    enqueue(async () => {
      const state = await postJson(path, { session: doc.session, version: doc.version, ...extra });
      refineSeq += 1;
      setBusy(false);
      applyState(state);
      setStatus(DONE_MESSAGES[path] || "Done");
      if (path === "/api/done" || (doc.persistent && worklist.length)) await loadWorklist();
    }, revert);
  }

  function accept(vertebra) {
    if (!doc || selected === null) return;
    const first = vertebra ? selected - (selected % 4) : selected;
    const points = vertebra ? [first, first + 1, first + 2, first + 3] : [selected];
    selected = null;
    simpleAction("/api/accept", { points });
  }

  function exportDataset() {
    enqueue(async () => {
      setStatus("Exporting…");
      const report = await postJson("/api/export_dataset", {});
      setStatus(`Exported ${report.training} training + ${report.test} test images to ${report.path}. Next: ` +
        `${report.command}`);
    });
  }

  function exportAs(format) {
    if (!doc) return;
    enqueue(async () => {
      const url = `/api/export?session=${encodeURIComponent(doc.session)}&format=${format}`;
      const { body, response } = await api(url, {}, true);
      const disposition = response.headers.get("Content-Disposition") || "";
      const match = /filename="([^"]+)"/.exec(disposition);
      const link = document.createElement("a");
      link.href = URL.createObjectURL(body);
      link.download = match ? match[1] : `keypoints.${format}`;
      document.body.appendChild(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(link.href), 10000);
      setStatus(`Exported ${link.download}`);
    });
  }

  // ---------------------------------------------------------------------------------------------
  // pointer and keyboard
  // ---------------------------------------------------------------------------------------------
  function nearestPoint(clientX, clientY) {
    const [x, y] = toImage(clientX, clientY);
    const u = unitsPerPixel();
    let best = null;
    let bestDistance = GRAB_RADIUS_PX * u;
    doc.points.forEach(([px, py], i) => {
      const d = Math.hypot(px - x, py - y);
      if (d <= bestDistance) {
        best = i;
        bestDistance = d;
      }
    });
    return best;
  }

  el.svg.addEventListener("pointerdown", (e) => {
    if (!doc || (e.button !== 0 && e.button !== 1)) return;
    const index = e.button === 0 && !el.svg.classList.contains("hide-overlay") ? nearestPoint(e.clientX, e.clientY) : null;
    const base = { startX: e.clientX, startY: e.clientY, lastX: e.clientX, lastY: e.clientY, moved: false };
    if (index !== null) {
      drag = { ...base, kind: "point", index, pos: doc.points[index] };
    } else {
      drag = { ...base, kind: "pan", button: e.button };
    }
    el.svg.setPointerCapture(e.pointerId);
    e.preventDefault();
  });

  el.svg.addEventListener("pointermove", (e) => {
    if (!drag) return;
    if (!drag.moved && Math.hypot(e.clientX - drag.startX, e.clientY - drag.startY) >= DRAG_THRESHOLD_PX) {
      drag.moved = true;
      if (drag.kind === "pan") el.svg.classList.add("panning");
    }
    if (!drag.moved) return;
    if (drag.kind === "point") {
      drag.pos = toImage(e.clientX, e.clientY);
      render();
    } else {
      const u = unitsPerPixel();
      view.x -= (e.clientX - drag.lastX) * u;
      view.y -= (e.clientY - drag.lastY) * u;
      drag.lastX = e.clientX;
      drag.lastY = e.clientY;
      applyView();
    }
  });

  function endGesture(e, cancelled) {
    if (!drag) return;
    const gesture = drag;
    drag = null;
    el.svg.classList.remove("panning");
    if (cancelled) {
      render();
      return;
    }
    const t0 = performance.now();
    if (gesture.kind === "point") {
      if (gesture.moved && !insideImage(gesture.pos)) {
        render();
        setStatus("Dropped outside the image: the point was not moved (drop it on the X-ray).", true);
      } else if (gesture.moved) {
        selected = null;
        commitFix(gesture.index, gesture.pos, t0);
        updatePanel();
      } else {
        select(selected === gesture.index ? null : gesture.index);
      }
    } else if (!gesture.moved && gesture.button === 0 && selected !== null) {
      const at = toImage(e.clientX, e.clientY);
      if (!insideImage(at)) {
        setStatus("That place is outside the image: the point was not moved.", true);
        return;
      }
      const index = selected;
      selected = null;
      commitFix(index, at, t0);
      updatePanel();
    }
  }

  el.svg.addEventListener("pointerup", (e) => endGesture(e, false));
  el.svg.addEventListener("pointercancel", (e) => endGesture(e, true));
  el.svg.addEventListener("wheel", (e) => {
    if (!doc) return;
    e.preventDefault();
    zoomAt(e.clientX, e.clientY, Math.exp(-e.deltaY * (e.deltaMode === 1 ? 0.05 : 0.0015)));
  }, { passive: false });

  document.addEventListener("keydown", (e) => {
    if (e.target.matches && e.target.matches("input[type=file], input[type=text], select, textarea")) return;
    const key = e.key.toLowerCase();
    if ((e.ctrlKey || e.metaKey) && ((key === "z" && e.shiftKey) || key === "y")) {
      e.preventDefault();
      if (doc && doc.can_redo) simpleAction("/api/redo");
    } else if ((e.ctrlKey || e.metaKey) && key === "z") {
      e.preventDefault();
      if (doc && doc.can_undo) simpleAction("/api/undo");
    } else if (e.ctrlKey || e.metaKey || e.altKey) {
      return;
    } else if (key === "a" && e.shiftKey) {
      acceptVisible();
    } else if (key === "a") {
      accept(false);
    } else if (key === "v") {
      accept(true);
    } else if (key === "n") {
      stepImage(1);
    } else if (key === "p") {
      stepImage(-1);
    } else if (key === "x") {
      autoFix();
    } else if (key === "d") {
      if (doc && doc.persistent) simpleAction("/api/done", { done: !doc.done });
    } else if (key === "h") {
      el.showOverlay.checked = !el.showOverlay.checked;
      applyDisplay();
    } else if (key === "l") {
      el.showLabels.checked = !el.showLabels.checked;
      applyDisplay();
    } else if (key === "i") {
      el.invert.checked = !el.invert.checked;
      applyDisplay();
    } else if (e.key === "Escape") {
      select(null);
    } else if ((e.key === "Delete" || e.key === "Backspace") && selected !== null) {
      releasePoint(selected);
    } else if (e.key === "f" || e.key === "F" || e.key === "0") {
      fit();
    } else if (e.key === "+" || e.key === "=") {
      zoomCenter(1.25);
    } else if (e.key === "-") {
      zoomCenter(0.8);
    }
  });

  el.file.addEventListener("change", () => {
    openFile(el.file.files[0]);
    el.file.value = "";
  });
  el.openExample.addEventListener("click", () => openExample(Number(el.example.value)));
  el.undo.addEventListener("click", () => simpleAction("/api/undo"));
  el.redo.addEventListener("click", () => simpleAction("/api/redo"));
  el.autoFix.addEventListener("click", autoFix);
  el.acceptPoint.addEventListener("click", () => accept(false));
  el.acceptVertebra.addEventListener("click", () => accept(true));
  el.done.addEventListener("click", () => simpleAction("/api/done", { done: !doc.done }));
  el.exportDataset.addEventListener("click", exportDataset);
  el.prevImage.addEventListener("click", () => stepImage(-1));
  el.nextImage.addEventListener("click", () => stepImage(1));

  // brightness / contrast / invert change only how the X-ray is shown (a CSS filter), never the pixels
  function applyDisplay() {
    el.image.style.filter = `brightness(${el.brightness.value}) contrast(${el.contrast.value})` +
      (el.invert.checked ? " invert(1)" : "");
    el.svg.classList.toggle("hide-overlay", !el.showOverlay.checked);
    el.svg.classList.toggle("hide-labels", !el.showLabels.checked);
  }
  for (const input of [el.brightness, el.contrast, el.invert, el.showOverlay, el.showLabels]) {
    input.addEventListener("input", applyDisplay);
  }
  el.reset.addEventListener("click", () => simpleAction("/api/reset"));
  el.release.addEventListener("click", () => releasePoint(selected));
  el.fit.addEventListener("click", fit);
  document.querySelectorAll("button.export").forEach((b) => {
    b.addEventListener("click", () => exportAs(b.dataset.format));
  });
  const viewer = $("#viewer");
  viewer.addEventListener("dragover", (e) => e.preventDefault());
  viewer.addEventListener("drop", (e) => {
    e.preventDefault();
    if (e.dataTransfer && e.dataTransfer.files.length) openFile(e.dataTransfer.files[0]);
  });
  window.addEventListener("resize", render);

  // ---------------------------------------------------------------------------------------------
  // what annotators expect from CVAT and Label Studio: accept all, progress, N/P to unfinished images,
  // arrow-key nudge, numbers at every zoom, the undo limit stated, COCO keypoints in and out
  // ---------------------------------------------------------------------------------------------
  const NUDGE_PX = 1; // screen pixels per arrow key (Shift: NUDGE_FAR_PX)
  const NUDGE_FAR_PX = 10;
  const NUMBER_SIZE_PX = 11;
  const SELECTED_NUMBER_SIZE_PX = 14;

  function progressBadge(item) {
    const span = document.createElement("span");
    span.className = "progress";
    const total = info ? info.num_keypoints : 68;
    span.textContent = item.checked === null || item.checked === undefined ? "" : `${item.checked}/${total}`;
    span.title = `${item.checked || 0} of ${total} points checked`;
    return span;
  }

  // the next (step 1) or previous (-1) image of the worklist not marked done, or null
  function nextUnfinished(step) {
    const at = doc ? worklist.findIndex((item) => item.name === doc.name) : -1;
    for (let i = at + step; i >= 0 && i < worklist.length; i += step) {
      if (worklist[i].status !== "done") return worklist[i];
    }
    return null;
  }

  // the image-pixel rectangle on screen (the viewBox plus the margins `meet` adds)
  function visibleRect() {
    const r = el.svg.getBoundingClientRect();
    const [x0, y0] = toImage(r.left, r.top);
    const [x1, y1] = toImage(r.right, r.bottom);
    return { x0: Math.max(0, x0), y0: Math.max(0, y0), x1: Math.min(doc.width, x1), y1: Math.min(doc.height, y1) };
  }

  function acceptPoints(points, what) {
    const open = points.filter((i) => !Object.prototype.hasOwnProperty.call(doc.fixed, String(i)));
    if (!open.length) {
      setStatus(`Nothing to accept: every point ${what} is checked already.`);
      return;
    }
    selected = null;
    simpleAction("/api/accept", { points: open });
  }

  function acceptVisible() {
    if (!doc) return;
    const r = visibleRect();
    const inside = doc.points.map((p, i) => [p, i])
      .filter(([[x, y]]) => x >= r.x0 && x <= r.x1 && y >= r.y0 && y <= r.y1).map(([, i]) => i);
    acceptPoints(inside, "on the screen");
  }

  function acceptAll() {
    if (doc) acceptPoints(doc.points.map((_, i) => i), "of the image");
  }

  // arrow keys move the selected point by screen pixels; it is then fixed there, as after a drag
  function nudge(dx, dy, far) {
    if (!doc || selected === null) return;
    const step = (far ? NUDGE_FAR_PX : NUDGE_PX) * unitsPerPixel();
    const [x, y] = doc.points[selected];
    const to = [Math.min(Math.max(x + dx * step, 0), doc.width), Math.min(Math.max(y + dy * step, 0), doc.height)];
    commitFix(selected, to, performance.now());
    updatePanel();
  }

  const ARROWS = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };
  document.addEventListener("keydown", (e) => {
    if (!(e.key in ARROWS) || e.ctrlKey || e.metaKey || e.altKey || selected === null) return;
    if (e.target.matches && e.target.matches("input, select, textarea")) return;
    e.preventDefault();
    nudge(...ARROWS[e.key], e.shiftKey);
  });

  // point numbers keep one screen size at every zoom; when neighbours crowd, only the selected one shows
  function placeNumber(i, x, y, radius, u, all) {
    const t = numbers[i];
    const shown = all || i === selected;
    t.style.display = shown ? "" : "none";
    t.classList.toggle("selected", i === selected);
    if (!shown) return;
    t.setAttribute("x", x + (radius + 2) * u);
    t.setAttribute("y", y);
    t.setAttribute("font-size", (i === selected ? SELECTED_NUMBER_SIZE_PX : NUMBER_SIZE_PX) * u);
  }

  function showUndoLimit() {
    const text = `Undo takes back the last ${info.undo_limit} actions; Reset returns to the first prediction.`;
    $("#undo-limit").textContent = text;
    el.undo.title = `Undo (Ctrl+Z); the last ${info.undo_limit} actions`;
  }

  async function download(url, fallbackName) {
    const { body, response } = await api(url, {}, true);
    const match = /filename="([^"]+)"/.exec(response.headers.get("Content-Disposition") || "");
    const link = document.createElement("a");
    link.href = URL.createObjectURL(body);
    link.download = match ? match[1] : fallbackName;
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10000);
    return link.download;
  }

  function exportCoco() {
    enqueue(async () => setStatus(`Exported ${await download("/api/export_coco", "coco_keypoints.json")}`));
  }

  function importCoco(file) {
    if (!file) return;
    enqueue(async () => {
      setStatus(`Importing ${file.name}…`);
      const report = await api("/api/import_coco", {
        method: "POST", headers: { "Content-Type": "application/json" }, body: await file.text(),
      });
      const { imported, skipped } = report.body;
      if (doc && doc.persistent) await startDocument(await postJson("/api/open", { name: doc.name }), performance.now());
      await loadWorklist();
      setStatus(`Imported the points of ${imported.length} image(s) from ${file.name}` +
        (skipped.length ? `; not in this folder: ${skipped.join(", ")}` : "") + " (undo takes an image back).");
    });
  }

  $("#accept-visible").addEventListener("click", acceptVisible);
  $("#accept-all").addEventListener("click", acceptAll);
  $("#export-coco").addEventListener("click", exportCoco);
  $("#import-coco").addEventListener("change", (e) => {
    importCoco(e.target.files[0]);
    e.target.value = "";
  });

  enqueue(loadInfo);
})();
