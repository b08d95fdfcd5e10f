// The Number mode: a wide pad read as a whole number through /api/read, each digit boxed with its confidence.
"use strict";

(() => {
  const boxes = document.getElementById("number-boxes");
  const overlay = boxes.getContext("2d");
  let inFlight = null;
  let placement = { x: 0, y: 0, scale: 1 };  // where the image sent sits on the pad (an upload is fitted)
  const BRUSH = 18;  // px on the 280 px high pad, as on the single-digit pad
  const DEBOUNCE_MS = 150;
  const SURE = "#2563eb", UNSURE = "#d9480f";
  const pad = drawingPad(document.getElementById("number-pad"), {
    brush: BRUSH, debounceMs: DEBOUNCE_MS, onDrawing: (blob) => send(blob, "image/png"), onFile: sendFile,
    onStrokeStart: () => { placement = { x: 0, y: 0, scale: 1 }; },  // drawing replaces an upload
  });

  function reset(message = "") {
    if (inFlight) inFlight.abort();
    document.dispatchEvent(new CustomEvent("digitrec:number-cleared"));
    document.getElementById("number-text").textContent = "–";
    document.getElementById("number-confidence").textContent = "";
    document.getElementById("number-unsure").hidden = true;
    document.getElementById("number-message").textContent = message;
    document.getElementById("number-digits").replaceChildren();
    overlay.clearRect(0, 0, boxes.width, boxes.height);
  }

  document.getElementById("number-undo").addEventListener("click", () => { if (!pad.undo()) reset(); });
  document.getElementById("number-clear").addEventListener("click", () => {
    placement = { x: 0, y: 0, scale: 1 }; pad.clear(); reset();
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
      item.append(element("span", { className: "digit" }, digit.digit), element("span", { className: "value" }, percent(digit.confidence)));
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
      // other panels (the corrections) follow the number pad through this event: the image sent and the reading
      document.dispatchEvent(new CustomEvent("digitrec:number-read", { detail: { result, body, type } }));
    } catch (problem) {
      if (problem.name !== "AbortError") document.getElementById("number-message").textContent = "The server did not answer.";
    }
  }

  function sendFile(file) {
    if (!file) return;
    pad.clear();
    reset();
    const picture = new Image();
    picture.onload = () => {  // boxes come back in the picture's own pixels: place them where it is shown
      placement = pad.showPicture(picture);
      URL.revokeObjectURL(picture.src);
      send(file, file.type || "application/octet-stream");
    };
    picture.onerror = () => { URL.revokeObjectURL(picture.src); send(file, file.type || "application/octet-stream"); };
    picture.src = URL.createObjectURL(file);
  }
  document.getElementById("number-file").addEventListener("change", (event) => sendFile(event.target.files[0]));
  // another panel that switches the server's model announces it; read the number again
  document.addEventListener("digitrec:model-changed", () => { if (pad.strokes.length) pad.schedule(); });
})();
