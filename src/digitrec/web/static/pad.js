// A drawing pad on a canvas, shared by the digit pad (app.js) and the Number mode (number.js): strokes
// from a mouse, a finger or a pen, kept for undo; once the hand has rested for `debounceMs`, `onDrawing`
// gets the drawing as a PNG blob; an image file dropped on the canvas goes to `onFile`.
"use strict";

function drawingPad(canvas, { brush, debounceMs, onDrawing, onFile, onStrokeStart = () => {} }) {
  const context = canvas.getContext("2d");
  const strokes = [];  // each stroke is a list of [x, y] points in canvas pixels
  let current = null;
  let timer = null;

  function redraw() {
    context.fillStyle = "#fff";
    context.fillRect(0, 0, canvas.width, canvas.height);
    context.strokeStyle = context.fillStyle = "#000";
    context.lineWidth = brush;
    context.lineCap = context.lineJoin = "round";
    for (const stroke of strokes) {
      context.beginPath();
      if (stroke.length === 1) {
        context.arc(stroke[0][0], stroke[0][1], brush / 2, 0, 2 * Math.PI);
        context.fill();
        continue;
      }
      context.moveTo(stroke[0][0], stroke[0][1]);
      for (const [x, y] of stroke.slice(1)) context.lineTo(x, y);
      context.stroke();
    }
  }

  function point(event) {
    const box = canvas.getBoundingClientRect();
    return [(event.clientX - box.left) * canvas.width / box.width, (event.clientY - box.top) * canvas.height / box.height];
  }

  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(() => { if (strokes.length) canvas.toBlob(onDrawing, "image/png"); }, debounceMs);
  }

  canvas.addEventListener("pointerdown", (event) => {
    event.preventDefault();
    canvas.setPointerCapture(event.pointerId);
    onStrokeStart();
    current = [point(event)];
    strokes.push(current);
    redraw();
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!current) return;
    for (const sample of event.getCoalescedEvents ? event.getCoalescedEvents() : [event]) current.push(point(sample));
    redraw();
    schedule();
  });
  for (const type of ["pointerup", "pointercancel"]) {
    canvas.addEventListener(type, () => { if (current) { current = null; schedule(); } });
  }
  canvas.addEventListener("dragover", (event) => { event.preventDefault(); canvas.classList.add("dragging"); });
  canvas.addEventListener("dragleave", () => canvas.classList.remove("dragging"));
  canvas.addEventListener("drop", (event) => {
    event.preventDefault();
    canvas.classList.remove("dragging");
    onFile(event.dataTransfer.files[0]);
  });
  redraw();

  return {
    strokes,
    schedule,
    // removes the last stroke; whether any are left
    undo() { strokes.pop(); redraw(); if (strokes.length) schedule(); return strokes.length > 0; },
    clear() { strokes.length = 0; redraw(); },
    // an uploaded picture in place of the strokes, fitted and centred; where it sits, for drawing on it
    showPicture(picture) {
      strokes.length = 0;
      redraw();
      const scale = Math.min(canvas.width / picture.width, canvas.height / picture.height);
      const placement = { x: (canvas.width - picture.width * scale) / 2, y: (canvas.height - picture.height * scale) / 2, scale };
      context.drawImage(picture, placement.x, placement.y, picture.width * scale, picture.height * scale);
      return placement;
    },
  };
}
