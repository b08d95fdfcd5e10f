// The Inside view: what the network computed for the digit the pad just sent, from POST /api/explain.
// Follows the pad through its events: digitrec:prediction (explain the same image) and digitrec:cleared.
"use strict";

(() => {
  const panel = document.getElementById("inside");
  const body = document.getElementById("inside-body");
  const classes = document.getElementById("inside-classes");
  let inFlight = null;
  let explanation = null;
  let chosen = null;  // the digit clicked, if any; otherwise the saliency follows the prediction

  for (let digit = 0; digit < 10; digit++) {
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.digit = digit;
    button.append(element("b", {}, digit), element("span", {}, "0%"));
    button.addEventListener("mouseenter", () => showSaliency(digit));
    button.addEventListener("focus", () => showSaliency(digit));
    button.addEventListener("mouseleave", () => showSaliency(current()));
    button.addEventListener("click", () => { chosen = chosen === digit ? null : digit; showSaliency(current()); });
    classes.appendChild(button);
  }

  function current() { return chosen ?? explanation.target; }

  async function paint(canvasId, url) {  // a 28x28 PNG onto its canvas, so its pixels can be read back
    const picture = new Image();
    picture.src = url;
    await picture.decode();
    const canvas = document.getElementById(canvasId);
    const context = canvas.getContext("2d");
    context.imageSmoothingEnabled = false;
    context.drawImage(picture, 0, 0, canvas.width, canvas.height);
  }

  async function showSaliency(digit) {
    if (!explanation) return;
    const saliency = explanation.saliency[digit];
    document.getElementById("inside-caption").textContent = saliency.caption;
    classes.querySelectorAll("button").forEach((button, d) => button.classList.toggle("shown", d === digit));
    await paint("inside-saliency", saliency.image);
    panel.dataset.saliencyDigit = digit;
  }

  // 2x for maps of 14 pixels and more; smaller maps larger, up to 6x (a pooled 3x3 map shows 18 px square)
  const mapZoom = (size) => Math.max(2, Math.min(6, Math.round(21 / size)));

  function figure(url, label, alt, zoom = 0) {  // zoom: show each pixel as zoom x zoom (0: the style's size)
    const item = document.createElement("figure");
    const image = document.createElement("img");
    if (zoom) image.addEventListener("load", () => { image.style.width = `${image.naturalWidth * zoom}px`; });
    image.src = url;
    image.alt = alt;
    const caption = document.createElement("figcaption");
    caption.textContent = label;
    item.append(image, caption);
    return item;
  }

  async function show(result) {
    explanation = result;
    chosen = null;
    classes.querySelectorAll("button").forEach((button, digit) => {
      button.classList.toggle("top", digit === result.digit);
      button.querySelector("span").textContent = `${(100 * result.probabilities[digit]).toFixed(1)}%`;
    });
    const stages = document.getElementById("inside-stages");
    stages.replaceChildren(...result.stages.map((stage) =>
      figure(stage.image, `${stage.name}: ${stage.shape[0]} feature maps of ${stage.shape[1]}×${stage.shape[2]}`,
             `The ${stage.shape[0]} feature maps of ${stage.name}`, mapZoom(stage.shape[2]))));
    document.getElementById("inside-maps-label").hidden = result.stages.length === 0;
    const filters = document.getElementById("inside-filters");
    filters.hidden = !result.filters;
    if (result.filters) filters.querySelector("img").src = result.filters.image;
    const templates = document.getElementById("inside-templates");
    templates.hidden = !result.templates;
    templates.querySelector("div").replaceChildren(...(result.templates || []).map((url, digit) =>
      figure(url, String(digit), `The weight template of ${digit}`)));
    document.getElementById("inside-empty").hidden = true;
    body.hidden = false;
    await paint("inside-input", result.input);
    await showSaliency(result.target);
    panel.dataset.state = "ready";
  }

  async function explain(image, type) {
    if (inFlight) inFlight.abort();
    inFlight = new AbortController();
    panel.dataset.state = "loading";
    try {
      const response = await fetch("/api/explain", {
        method: "POST", headers: { "Content-Type": type }, body: image, signal: inFlight.signal,
      });
      const result = await response.json();
      if (!response.ok) { clear(); return; }
      await show(result);
    } catch (problem) {
      if (problem.name !== "AbortError") clear();
    }
  }

  function clear() {
    if (inFlight) inFlight.abort();
    explanation = null;
    body.hidden = true;
    document.getElementById("inside-empty").hidden = false;
    panel.dataset.state = "empty";
  }

  document.addEventListener("digitrec:prediction", (event) => explain(event.detail.body, event.detail.type));
  document.addEventListener("digitrec:cleared", clear);
  clear();
})();
