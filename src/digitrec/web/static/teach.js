// Teaching it your handwriting: "Wrong? It was: [0-9]" under the pad's answer, "Wrong? It was: [text]" under
// the number read, the "Your corrections" panel (thumbnails, labels, remove), and "Learn from them", which
// runs as a Train panel run (live curve) and then offers "Use". Elements are built with dom.js's `element`
// (text as text, never as HTML).
"use strict";

(() => {
  const byId = (id) => document.getElementById(id);
  const status = byId("teach-status");
  let lastDigit = null;  // {body, result} of the pad's latest answer
  let lastNumber = null;  // {body, result} of the number pad's latest reading
  let learning = null;  // the name of the personal run training now
  let learned = null;  // the name of the personal run that finished last

  async function api(method, url, body) {
    const response = await fetch(url, {
      method, headers: body ? { "Content-Type": "application/json" } : {}, body: body ? JSON.stringify(body) : undefined,
    });
    const result = response.status === 204 ? {} : await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(result.detail || `error ${response.status}`);
    return result;
  }

  function dataUrl(blob) {
    return new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(reader.result);
      reader.onerror = () => reject(new Error("could not read the drawing"));
      reader.readAsDataURL(blob);
    });
  }

  function say(element, text) { element.textContent = text; }

  // --- "Wrong? It was: [0-9]" under the pad's answer ---
  const digitBox = byId("teach-digit");
  const digitButtons = byId("teach-digit-buttons");
  for (let digit = 0; digit < 10; digit++) {
    digitButtons.append(element("button", { type: "button", dataset: { label: String(digit) },
      title: `Store this drawing as a ${digit}` }, String(digit)));
  }
  digitButtons.addEventListener("click", async (event) => {
    const button = event.target.closest("button");
    if (!button || !lastDigit) return;
    const label = Number(button.dataset.label);
    try {
      const stored = await api("POST", "/api/corrections", { image: await dataUrl(lastDigit.body), label });
      say(byId("message"), `Stored: this drawing is a ${label} (correction ${stored[0].id}). Learn from your corrections below.`);
      digitBox.hidden = true;
      refresh();
    } catch (problem) {
      say(byId("message"), problem.message);
    }
  });
  document.addEventListener("digitrec:prediction", (event) => {
    lastDigit = event.detail;
    digitBox.hidden = false;
  });
  document.addEventListener("digitrec:cleared", () => { lastDigit = null; digitBox.hidden = true; });

  // --- "Wrong? It was: [text]" under the number read ---
  const numberForm = byId("teach-number");
  document.addEventListener("digitrec:number-read", (event) => {
    lastNumber = event.detail;
    numberForm.hidden = false;
  });
  document.addEventListener("digitrec:number-cleared", () => { lastNumber = null; numberForm.hidden = true; });
  numberForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!lastNumber) return;
    const text = byId("teach-number-text").value.trim();
    const message = byId("number-message");
    const read = lastNumber.result.digits.length;
    if (!/^[0-9]+$/.test(text)) { say(message, "Type the right number with digits 0-9 only."); return; }
    if (text.length !== read) {
      say(message, `It read ${read} digit${read === 1 ? "" : "s"} (${lastNumber.result.text}) but “${text}” has ${
        text.length}: each digit is kept with its box, so the counts must match. Write the digits further apart.`);
      return;
    }
    try {
      const stored = await api("POST", "/api/corrections", { image: await dataUrl(lastNumber.body), text });
      say(message, `Stored ${stored.length} digit${stored.length === 1 ? "" : "s"} of ${text} as corrections.`);
      numberForm.hidden = true;
      refresh();
    } catch (problem) {
      say(message, problem.message);
    }
  });

  // --- the "Your corrections" panel ---
  function item(correction) {
    const read = correction.answer == null ? "" : ` (read ${correction.answer})`;
    return element("li", { dataset: { id: String(correction.id), label: String(correction.label) } },
      element("img", { src: correction.input, alt: `correction ${correction.id}: a ${correction.label}${read}` }),
      element("span", {}, `${correction.label}${read}`),
      element("button", { type: "button", dataset: { remove: String(correction.id) }, title: `Remove correction ${
        correction.id}` }, "Remove"));
  }

  async function refresh() {
    try {
      const stored = await api("GET", "/api/corrections");
      byId("teach-list").replaceChildren(...stored.corrections.map(item));
      byId("teach-list").dataset.count = String(stored.count);
      byId("teach-learn").disabled = stored.count === 0 || learning !== null;
      if (!learning) {
        say(status, stored.count ? `${stored.count} correction${stored.count === 1 ? "" : "s"} (at most ${
          stored.limit.toLocaleString("en")}).` : "None yet: when the pad reads a digit wrong, tell it what it was.");
      }
    } catch (problem) {
      say(status, problem.message);
    }
  }

  byId("teach-list").addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-remove]");
    if (!button) return;
    try {
      await api("DELETE", `/api/corrections/${encodeURIComponent(button.dataset.remove)}`);
      refresh();
    } catch (problem) {
      say(status, problem.message);
    }
  });

  byId("teach-learn").addEventListener("click", async () => {
    try {
      const run = await api("POST", "/api/corrections/learn", {});
      learning = run.name;
      byId("teach-learn").disabled = true;
      byId("teach-use").hidden = true;
      say(status, `Learning your handwriting (run ${run.name}): its curve is in the Train panel.`);
      document.dispatchEvent(new CustomEvent("digitrec:run-started", { detail: run }));
    } catch (problem) {
      say(status, problem.message);
    }
  });

  document.addEventListener("digitrec:run-ended", (event) => {
    const run = event.detail;
    if (run.name !== learning) return;
    learning = null;
    if (run.status === "finished") {
      learned = run.name;
      byId("teach-use").hidden = false;
      say(status, `Learned: ${run.name}, test accuracy ${(100 * run.test_accuracy).toFixed(2)}% on MNIST. Use it?`);
    } else {
      say(status, `Learning ended ${run.status}${run.detail ? `: ${run.detail}` : ""}.`);
    }
    refresh();
  });

  byId("teach-use").addEventListener("click", async () => {
    if (!learned) return;
    try {
      const answer = await api("PUT", "/api/model", { run: learned });
      say(status, `The pad now uses your personal model (${learned}).`);
      byId("teach-use").hidden = true;
      document.dispatchEvent(new CustomEvent("digitrec:model-changed", { detail: answer }));
    } catch (problem) {
      say(status, problem.message);
    }
  });

  refresh();
})();
