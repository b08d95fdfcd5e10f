// The drawing page: strokes on a canvas, debounced live prediction through /api/predict.
"use strict";

let inFlight = null;
const BRUSH = 20;  // px on the 280 px canvas: about MNIST's stroke width once scaled to 20 px
const DEBOUNCE_MS = 120;
const pad = drawingPad(document.getElementById("pad"), {
  brush: BRUSH, debounceMs: DEBOUNCE_MS, onDrawing: (blob) => send(blob, "image/png"), onFile: sendFile,
});

const bars = document.getElementById("bars");
for (let digit = 0; digit < 10; digit++) {
  bars.appendChild(element("li", {}, element("span", {}, digit),
    element("span", { className: "bar" }, element("span", { className: "fill" })), element("span", { className: "value" }, "0%")));
}

function undo() { if (!pad.undo()) reset(); }
function clear() { pad.clear(); reset(); }
document.getElementById("undo").addEventListener("click", undo);
document.getElementById("clear").addEventListener("click", clear);
document.addEventListener("keydown", (event) => {
  if ((event.ctrlKey || event.metaKey) && event.key.toLowerCase() === "z") { event.preventDefault(); undo(); }
  else if (event.key === "Escape") clear();
});

function reset() {
  document.getElementById("digit").textContent = "–";
  document.getElementById("confidence").textContent = "";
  document.getElementById("unsure").hidden = true;
  document.getElementById("message").textContent = "";
  document.getElementById("seen").removeAttribute("src");
  show(new Array(10).fill(0), -1);
  document.dispatchEvent(new CustomEvent("digitrec:cleared"));
}

function show(probabilities, best) {
  bars.querySelectorAll("li").forEach((item, digit) => {
    item.classList.toggle("top", digit === best);
    item.querySelector(".fill").style.width = `${(100 * probabilities[digit]).toFixed(1)}%`;
    item.querySelector(".value").textContent = `${(100 * probabilities[digit]).toFixed(1)}%`;
  });
}

async function send(body, type) {
  if (inFlight) inFlight.abort();
  inFlight = new AbortController();
  try {
    const response = await fetch("/api/predict?preprocessed=true", {
      method: "POST", headers: { "Content-Type": type }, body, signal: inFlight.signal,
    });
    const result = await response.json();
    if (!response.ok) {
      reset();
      document.getElementById("message").textContent = result.detail || `error ${response.status}`;
      return;
    }
    document.getElementById("digit").textContent = result.digit;
    document.getElementById("confidence").textContent = `${(100 * result.confidence).toFixed(1)}% sure`;
    document.getElementById("unsure").hidden = !result.unsure;
    document.getElementById("message").textContent = "";
    document.getElementById("seen").src = result.preprocessed;
    show(result.probabilities, result.digit);
    // other panels (e.g. the Inside view) follow the pad through this event: the image sent and the answer
    document.dispatchEvent(new CustomEvent("digitrec:prediction", { detail: { result, body, type } }));
  } catch (problem) {
    if (problem.name !== "AbortError") document.getElementById("message").textContent = "The server did not answer.";
  }
}

function sendFile(file) {
  if (!file) return;
  pad.clear();
  const picture = new Image();
  picture.onload = () => { pad.showPicture(picture); URL.revokeObjectURL(picture.src); };  // shown; the original is sent
  picture.src = URL.createObjectURL(file);
  send(file, file.type || "application/octet-stream");
}
document.getElementById("file").addEventListener("change", (event) => sendFile(event.target.files[0]));

function showModel() {
  fetch("/api/model").then((r) => r.json()).then((model) => {
    const accuracy = model.test_accuracy ? `, ${(100 * model.test_accuracy).toFixed(2)}% on the MNIST test set` : "";
    document.getElementById("model-info").textContent = `Draw a digit, 0 to 9. Model: ${model.name}${accuracy}.`;
  }).catch(() => {});
}
// another panel that switches the server's model announces it; the pad then reads the drawing again
document.addEventListener("digitrec:model-changed", () => { showModel(); if (pad.strokes.length) pad.schedule(); });
showModel();
reset();
