// Interactive spine keypoint annotation: the page side. Vanilla JS, no external assets.
//
// The server owns the truth (demo/server.py): every action (open, refine, undo, reset) returns the
// full state, which the page draws. Coordinates are (x, y) in original image pixels, which are also
// the SVG user units (the <image> sits at 0,0 with its pixel size), so zoom/pan is the viewBox.
// Requests run one after another (a promise chain); an edit made while a refinement is on its way
// replaces the edits queued before it, so only the newest set of fixed points is sent.
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
  };

  let info = null; // GET /api/info
  let doc = null; // the current state from the server (plus local edits not yet answered)
  let view = null; // viewBox {x, y, w, h} in image pixels
  let selected = null; // index of the selected point
  let drag = null; // pointer gesture in progress
  let chain = Promise.resolve();
  let refineSeq = 0;
  const circles = [];
  const polygons = [];
  const labels = [];
  const rings = [];

  // Exposed for the browser test and for curious users (read only).
  const stats = { refines: 0, lastRefineMs: null, refineMs: [], predicts: 0, errors: 0 };
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
    return new Promise((resolve) => requestAnimationFrame(() => resolve()));
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
    el.example.replaceChildren(...info.examples.map((name, i) => new Option(name, String(i))));
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
    document.body.classList.remove("busy");
    doc = state;
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
    setStatus(`Predicted ${state.points.length} points in ${Math.round(performance.now() - t0)} ms`);
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
    return [Math.min(Math.max(p.x, 0), doc.width), Math.min(Math.max(p.y, 0), doc.height)];
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
    for (let i = 0; i < numPoints; i += 1) {
      const c = svgElement("circle", { class: "kp", id: `kp-${i}`, "data-index": i }, el.points);
      svgElement("title", {}, c);
      circles.push(c);
    }
  }

  function shownPoint(i) {
    if (drag && drag.kind === "point" && drag.moved && drag.index === i) return drag.pos;
    return doc.points[i];
  }

  function render() {
    if (!doc || !circles.length) return;
    const u = unitsPerPixel();
    const names = info.keypoint_names;
    for (let i = 0; i < circles.length; i += 1) {
      const [x, y] = shownPoint(i);
      const c = circles[i];
      const isFixed = Object.prototype.hasOwnProperty.call(doc.fixed, String(i));
      c.setAttribute("cx", x);
      c.setAttribute("cy", y);
      const radius = i === selected ? SELECTED_RADIUS_PX : (isFixed ? FIXED_RADIUS_PX : POINT_RADIUS_PX);
      c.setAttribute("r", radius * u);
      c.classList.toggle("fixed", isFixed);
      c.classList.toggle("selected", i === selected);
      c.firstChild.textContent = `${names[i]} (#${i}) · ${isFixed ? "fixed by you" : "predicted"}` +
        ` · confidence ${doc.confidence[i].toFixed(2)}`;
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
    const worst = doc.least_confident || [];
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
    el.reset.disabled = !ready;
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
    el.worst.replaceChildren(...(ready ? doc.least_confident : []).map((i) => {
      const li = document.createElement("li");
      li.textContent = `${info.keypoint_names[i]} (${doc.confidence[i].toFixed(2)})`;
      li.addEventListener("click", () => select(i));
      return li;
    }));
  }

  function select(index) {
    selected = index;
    render();
    updatePanel();
  }

  // ---------------------------------------------------------------------------------------------
  // editing
  // ---------------------------------------------------------------------------------------------
  function applyState(state) {
    doc = { ...state, image_url: doc.image_url };
    render();
    updatePanel();
  }

  function resync() {
    if (!doc) return undefined;
    return api(`/api/state?session=${encodeURIComponent(doc.session)}`).then(({ body }) => {
      refineSeq += 1;
      applyState(body);
    }).catch(() => undefined);
  }

  function requestRefine(t0) {
    const seq = ++refineSeq;
    document.body.classList.add("busy");
    updatePanel();
    enqueue(async () => {
      if (seq !== refineSeq) return; // a newer edit follows and sends the newer fixed points
      const state = await postJson("/api/refine", { session: doc.session, fixed: doc.fixed });
      if (seq !== refineSeq) return;
      applyState(state);
      await nextFrame();
      const ms = performance.now() - t0;
      stats.refines += 1;
      stats.lastRefineMs = ms;
      stats.refineMs.push(ms);
      document.body.classList.remove("busy");
      const moved = state.points.length - Object.keys(state.fixed).length;
      setStatus(`Refined ${moved} points in ${Math.round(ms)} ms (model ${Math.round(state.model_ms)} ms)`);
    }, () => {
      document.body.classList.remove("busy");
      return resync();
    });
  }

  function commitFix(index, xy, t0) {
    doc.fixed = { ...doc.fixed, [String(index)]: [xy[0], xy[1]] };
    doc.points = doc.points.map((p, i) => (i === index ? [xy[0], xy[1]] : p));
    render();
    requestRefine(t0);
  }

  function releasePoint(index) {
    if (!doc || !Object.prototype.hasOwnProperty.call(doc.fixed, String(index))) return;
    const fixed = { ...doc.fixed };
    delete fixed[String(index)];
    doc.fixed = fixed;
    render();
    requestRefine(performance.now());
  }

  function simpleAction(path) {
    if (!doc) return;
    enqueue(async () => {
      const state = await postJson(path, { session: doc.session });
      refineSeq += 1;
      document.body.classList.remove("busy");
      applyState(state);
      setStatus(path.endsWith("undo") ? "Undone" : "Back to the first prediction");
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
  el.svg.addEventListener("pointerdown", (e) => {
    if (!doc || (e.button !== 0 && e.button !== 1)) return;
    const target = e.target.closest && e.target.closest(".kp");
    const base = { startX: e.clientX, startY: e.clientY, lastX: e.clientX, lastY: e.clientY, moved: false };
    if (target && e.button === 0) {
      const index = Number(target.dataset.index);
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
      if (gesture.moved) {
        selected = null;
        commitFix(gesture.index, gesture.pos, t0);
        updatePanel();
      } else {
        select(selected === gesture.index ? null : gesture.index);
      }
    } else if (!gesture.moved && gesture.button === 0 && selected !== null) {
      const index = selected;
      selected = null;
      commitFix(index, toImage(e.clientX, e.clientY), t0);
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
    if (e.target.matches && e.target.matches("input, select, textarea")) return;
    if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === "z") {
      e.preventDefault();
      if (doc && doc.can_undo) simpleAction("/api/undo");
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

  enqueue(loadInfo);
})();
