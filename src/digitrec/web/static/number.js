// The Number mode: a wide pad read as a whole number through /api/read, each digit boxed with its confidence.
"use strict";

(() => {
  const pad = document.getElementById("number-pad");
  const boxes = document.getElementById("number-boxes");
  const ink = pad.getContext("2d");
  const overlay = boxes.getContext("2d");
  const strokes = [];  // each stroke is a list of [x, y] points in canvas pixels, kept for undo
  let current = null;
  let timer = null;
  let inFlight = null;
  let placement = { x: 0, y: 0, scale: 1 };  // where the image sent sits on the pad (an upload is fitted)
  const BRUSH = 18;  // px on the 280 px high pad, as on the single-digit pad
  const DEBOUNCE_MS = 150;
  const SURE = "#2563eb", UNSURE = "#d9480f";

  function redraw() {
    ink.fillStyle = "#fff";
    ink.fillRect(0, 0, pad.width, pad.height);
    ink.strokeStyle = ink.fillStyle = "#000";
    ink.lineWidth = BRUSH;
    ink.lineCap = ink.lineJoin = "round";
    for (const stroke of strokes) {
      ink.beginPath();
      if (stroke.length === 1) {
        ink.arc(stroke[0][0], stroke[0][1], BRUSH / 2, 0, 2 * Math.PI);
        ink.fill();
        continue;
      }
      ink.moveTo(stroke[0][0], stroke[0][1]);
      for (const [x, y] of stroke.slice(1)) ink.lineTo(x, y);
      ink.stroke();
    }
  }

  function point(event) {
    const box = pad.getBoundingClientRect();
    return [(event.clientX - box.left) * pad.width / box.width, (event.clientY - box.top) * pad.height / box.height];
  }

  pad.addEventListener("pointerdown", (event) => {
    event.preventDefault();
    pad.setPointerCapture(event.pointerId);
    if (placement.scale !== 1 || placement.x || placement.y) { strokes.length = 0; placement = { x: 0, y: 0, scale: 1 }; }
    current = [point(event)];
    strokes.push(current);
    redraw();
  });
  pad.addEventListener("pointermove", (event) => {
    if (!current) return;
    for (const sample of event.getCoalescedEvents ? event.getCoalescedEvents() : [event]) current.push(point(sample));
    redraw();
    schedule();
  });
  for (const type of ["pointerup", "pointercancel"]) {
    pad.addEventListener(type, () => { if (current) { current = null; schedule(); } });
  }

  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(() => { if (strokes.length) pad.toBlob((blob) => send(blob, "image/png"), "image/png"); }, DEBOUNCE_MS);
  }

  function reset(message = "") {
    if (inFlight) inFlight.abort();
    document.getElementById("number-text").textContent = "–";
    document.getElementById("number-confidence").textContent = "";
    document.getElementById("number-unsure").hidden = true;
    document.getElementById("number-message").textContent = message;
    document.getElementById("number-digits").replaceChildren();
    overlay.clearRect(0, 0, boxes.width, boxes.height);
  }

  document.getElementById("number-undo").addEventListener("click", () => {
    strokes.pop(); redraw(); strokes.length ? schedule() : reset();
  });
  document.getElementById("number-clear").addEventListener("click", () => {
    strokes.length = 0; placement = { x: 0, y: 0, scale: 1 }; redraw(); reset();
  });

  function percent(value) { return `${(100 * value).toFixed(0)}%`; }

  function show(reading) {
    document.getElementById("number-text").textContent = reading.text;
    document.getElementById("number-confidence").textContent = `${percent(reading.confidence)} sure of the whole`;
    document.getElementById("number-unsure").hidden = !reading.unsure;
    document.getElementById("number-message").textContent = "";
    overlay.clearRect(0, 0, boxes.width, boxes.height);
    overlay.lineWidth = 3;
    overlay.font = "bold 18px system-ui, sans-serif";
    overlay.textAlign = "center";
    overlay.textBaseline = "top";
    const list = document.getElementById("number-digits");
    list.replaceChildren();
    for (const digit of reading.digits) {
      const [x, y, w, h] = digit.box.map((v) => v * placement.scale);
      const left = placement.x + x, top = placement.y + y;
      const colour = digit.unsure ? UNSURE : SURE;
      overlay.strokeStyle = overlay.fillStyle = colour;
      overlay.strokeRect(left, top, w, h);
      overlay.fillText(percent(digit.confidence), left + w / 2, Math.min(top + h + 4, boxes.height - 20));
      const item = document.createElement("li");
      item.className = digit.unsure ? "unsure" : "";
      const others = digit.alternatives.map((a) => `${a.digit} ${percent(a.confidence)}`).join(", ");
      item.title = `others: ${others}`;
      item.innerHTML = `<span class="digit">${digit.digit}</span><span class="value">${percent(digit.confidence)}</span>`;
      list.appendChild(item);
    }
  }

  async function send(body, type) {
    if (inFlight) inFlight.abort();
    inFlight = new AbortController();
    try {
      const response = await fetch("/api/read", {
        method: "POST", headers: { "Content-Type": type }, body, signal: inFlight.signal,
      });
      const result = await response.json();
      if (!response.ok) { reset(result.detail || `error ${response.status}`); return; }
      show(result);
    } catch (problem) {
      if (problem.name !== "AbortError") document.getElementById("number-message").textContent = "The server did not answer.";
    }
  }

  function sendFile(file) {
    if (!file) return;
    strokes.length = 0;
    reset();
    const picture = new Image();
    picture.onload = () => {  // show the upload on the pad, fitted; boxes come back in its own pixels
      redraw();
      const scale = Math.min(pad.width / picture.width, pad.height / picture.height);
      placement = { x: (pad.width - picture.width * scale) / 2, y: (pad.height - picture.height * scale) / 2, scale };
      ink.drawImage(picture, placement.x, placement.y, picture.width * scale, picture.height * scale);
      URL.revokeObjectURL(picture.src);
      send(file, file.type || "application/octet-stream");
    };
    picture.onerror = () => { URL.revokeObjectURL(picture.src); send(file, file.type || "application/octet-stream"); };
    picture.src = URL.createObjectURL(file);
  }
  document.getElementById("number-file").addEventListener("change", (event) => sendFile(event.target.files[0]));
  pad.addEventListener("dragover", (event) => { event.preventDefault(); pad.classList.add("dragging"); });
  pad.addEventListener("dragleave", () => pad.classList.remove("dragging"));
  pad.addEventListener("drop", (event) => {
    event.preventDefault();
    pad.classList.remove("dragging");
    sendFile(event.dataTransfer.files[0]);
  });
  // another panel that switches the server's model announces it; read the number again
  document.addEventListener("digitrec:model-changed", () => { if (strokes.length) schedule(); });
  redraw();
})();
