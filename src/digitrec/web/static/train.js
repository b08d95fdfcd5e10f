// The Train panel: start, stop and resume a training run on the server, draw its live curves from the
// run's log (server-sent events), list the runs, and choose the model the drawing pad uses.
"use strict";

(() => {
  const byId = (id) => document.getElementById(id);
  const chart = byId("train-chart");
  const status = byId("train-status");
  let recipes = {};
  let shown = null;  // the run whose curve is drawn
  let records = [];  // its log records, in step order
  let steps = 0;  // its planned steps: the chart's width
  let events = null;

  async function api(method, url, body) {
    const response = await fetch(url, {
      method, headers: body ? { "Content-Type": "application/json" } : {}, body: body ? JSON.stringify(body) : undefined,
    });
    const result = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(result.detail || `error ${response.status}`);
    return result;
  }

  const percent = (value) => (value == null ? "–" : `${(100 * value).toFixed(2)}%`);
  const count = (value) => (value == null ? "?" : value.toLocaleString("en"));

  function duration(seconds) {
    if (seconds == null) return "";
    if (seconds < 90) return `about ${Math.ceil(seconds)} s left`;
    return `about ${Math.round(seconds / 60)} min left`;
  }

  // --- the chart: loss on the left, accuracy on the right, both against step ---
  function draw() {
    const context = chart.getContext("2d");
    const { width, height } = chart;
    context.fillStyle = "#fff";
    context.fillRect(0, 0, width, height);
    const half = width / 2, pad = 28, top = 14;
    const panels = [{ left: pad, title: "loss" }, { left: half + pad, title: "accuracy (%)" }];
    const plotWidth = half - pad - 8, plotHeight = height - top - pad;
    context.font = "11px system-ui, sans-serif";
    for (const panel of panels) {
      context.strokeStyle = "#d0d5dd";
      context.strokeRect(panel.left, top, plotWidth, plotHeight);
      context.fillStyle = "#667085";
      context.fillText(panel.title, panel.left + 4, top - 3);
      context.fillText("step", panel.left + plotWidth - 24, height - 8);
    }
    const last = Math.max(steps, ...records.map((record) => record.step), 1);
    const x = (panel, step) => panel.left + (step / last) * plotWidth;
    const maxLoss = Math.max(...records.map((record) => record.loss), 0.1);
    const lossY = (loss) => top + plotHeight * (1 - loss / maxLoss);
    // accuracy from the nearest 10 % below the lowest point: the last few points are where runs differ
    const accuracies = records.flatMap((record) => [record.train_accuracy, record.validation_accuracy ?? 1]);
    const floor = Math.min(0.9, Math.floor(10 * Math.min(...accuracies, 1)) / 10);
    const accuracyY = (accuracy) => top + plotHeight * (1 - (accuracy - floor) / (1 - floor));
    context.fillStyle = "#667085";
    context.fillText(maxLoss.toFixed(2), 2, top + 8);
    context.fillText("0", 2, top + plotHeight);
    context.fillText("100", half + 2, top + 8);
    context.fillText(String(Math.round(100 * floor)), half + 2, top + plotHeight);
    context.fillText(count(last), panels[0].left + plotWidth - 30, height - 18);
    const line = (panel, pairs, colour, dots) => {
      context.strokeStyle = colour;
      context.fillStyle = colour;
      context.lineWidth = 1.5;
      context.beginPath();
      pairs.forEach(([step, y], index) => (index ? context.lineTo(x(panel, step), y) : context.moveTo(x(panel, step), y)));
      context.stroke();
      if (dots) for (const [step, y] of pairs) context.fillRect(x(panel, step) - 2, y - 2, 4, 4);
    };
    const validated = records.filter((record) => record.validation_accuracy != null);
    line(panels[0], records.map((record) => [record.step, lossY(record.loss)]), "#b42318", records.length < 3);
    line(panels[1], records.map((record) => [record.step, accuracyY(record.train_accuracy)]), "#84adff", records.length < 3);
    line(panels[1], validated.map((record) => [record.step, accuracyY(record.validation_accuracy)]), "#f79009", true);
    chart.dataset.points = records.length;  // what the curves hold, for tests and assistive tools
    chart.dataset.validationPoints = validated.length;
  }

  // --- following one run: its log so far, then each new record, until it stops training ---
  function follow(name) {
    if (events) events.close();
    shown = name;
    records = [];
    byId("train-result").hidden = true;
    draw();
    events = new EventSource(`/api/runs/${encodeURIComponent(name)}/events`);
    events.addEventListener("log", (event) => { records.push(JSON.parse(event.data)); draw(); });
    events.addEventListener("reset", () => { records = []; draw(); });  // a resume rewrote the log
    events.addEventListener("progress", (event) => showProgress(JSON.parse(event.data)));
    events.addEventListener("end", (event) => {
      events.close();
      events = null;
      const run = JSON.parse(event.data);
      showProgress(run);
      refreshRuns();
      if (run.status === "finished") showResult(run.name);
      document.dispatchEvent(new CustomEvent("digitrec:run-ended", { detail: run }));  // e.g. the corrections panel
    });
  }

  function showProgress(run) {
    steps = run.steps || steps;
    draw();
    const what = `${run.model} (${run.recipe})`;
    const speed = run.steps_per_second ? ` · ${run.steps_per_second.toFixed(0)} steps/s · ${duration(run.seconds_left)}` : "";
    const lines = {
      running: `Training ${what}: step ${count(run.step)} of ${count(run.steps)}${speed}`,
      stopping: `Stopping ${what} at step ${count(run.step)}: saving a checkpoint…`,
      finished: `Finished ${what}: ${count(run.steps)} steps, test accuracy ${percent(run.test_accuracy)}.`,
      stopped: `Stopped ${what} at step ${count(run.step)} of ${count(run.steps)}: Resume continues from its checkpoint.${
        run.detail ? ` (${run.detail})` : ""}`,
      failed: `${what} failed before its first checkpoint${run.detail ? `: ${run.detail}` : ""}. Start it again.`,
      damaged: `Run ${run.name} cannot be read: ${run.detail}`,
    };
    status.textContent = lines[run.status];
    status.dataset.status = run.status;
    setButtons(run.status === "running" || run.status === "stopping", run.resumable);
  }

  function setButtons(training, resumable) {
    byId("train-start").disabled = training;
    byId("train-stop").disabled = !training;
    byId("train-resume").disabled = training || !resumable;
  }

  async function showResult(name) {
    const run = await api("GET", `/api/runs/${encodeURIComponent(name)}`);
    if (!run.summary || name !== shown) return;
    const summary = run.summary;
    byId("train-test-accuracy").textContent = percent(summary.test_accuracy);
    byId("train-errors").textContent = `${count(summary.errors)} of ${count(summary.images)}`;
    byId("train-report").href = run.report;
    const most = Math.max(...summary.confusion_matrix.flat());
    const header = element("tr", {}, element("th"), ...[...Array(10).keys()].map((digit) => element("th", {}, digit)));
    const rows = summary.confusion_matrix.map((row, truth) => element("tr", {}, element("th", {}, truth), ...row.map((count, answer) => {
      const shade = count ? 0.12 + 0.88 * Math.log1p(count) / Math.log1p(most) : 0;  // log: errors stay visible
      const colour = truth === answer ? `rgba(37,99,235,${shade})` : `rgba(180,35,24,${shade})`;
      return element("td", { className: shade > 0.6 ? "dark" : "", style: { background: colour } }, count || "");
    })));
    byId("train-confusion").replaceChildren(header, ...rows);
    byId("train-mistakes").replaceChildren(...summary.mistakes.map((mistake) => element("figure", {},
      element("img", { src: mistake.image, width: 42, height: 42,
                       alt: `test digit ${mistake.index}: a ${mistake.label} read as ${mistake.predicted}` }),
      element("figcaption", {}, `${mistake.label}→${mistake.predicted} ${(100 * mistake.confidence).toFixed(0)}%`))));
    byId("train-result").hidden = false;
  }

  // --- the runs list and the model the pad uses ---
  async function refreshRuns() {
    const [runs, training] = await Promise.all([api("GET", "/api/runs"), api("GET", "/api/training")]);
    const selected = training.selected && training.selected.run;
    byId("runs").querySelector("tbody").replaceChildren(...runs.map((run) => element("tr",
      { dataset: { run: run.name, status: run.status }, title: run.detail || "" },
      element("td", {}, element("button", { type: "button", className: "link", dataset: { show: run.name },
                                            title: "Show this run's curves" }, run.name)),
      element("td", {}, run.model || "?"), element("td", {}, `${count(run.step)}/${count(run.steps)}`),
      element("td", {}, percent(run.validation_accuracy)), element("td", {}, percent(run.test_accuracy)),
      element("td", {}, run.status),
      element("td", {}, ...(run.status === "finished" ? [element("button", { type: "button", dataset: { use: run.name },
        disabled: !training.enabled }, run.name === selected ? "In use" : "Use")] : [])))));
  }

  async function useModel(choice) {
    try {
      const answer = await api("PUT", "/api/model", choice);
      status.textContent = `The pad now uses ${choice.run ? `run ${choice.run}` : `the bundled ${choice.bundled} model`} (${
        answer.name}, test accuracy ${percent(answer.test_accuracy)}).`;
      document.dispatchEvent(new CustomEvent("digitrec:model-changed", { detail: answer }));
      refreshRuns();
    } catch (problem) {
      status.textContent = problem.message;
    }
  }

  byId("runs").addEventListener("click", (event) => {
    const button = event.target.closest("button");
    if (!button) return;
    if (button.dataset.use) useModel({ run: button.dataset.use });
    if (button.dataset.show) follow(button.dataset.show);
  });
  document.querySelectorAll("[data-bundled]").forEach((button) => {
    button.addEventListener("click", () => useModel({ bundled: button.dataset.bundled }));
  });

  // --- the form: model, recipe, steps; start, stop, resume ---
  function fillRecipes() {
    const choices = recipes[byId("train-model").value] || {};
    byId("train-recipe").replaceChildren(...Object.keys(choices).map((name) => element("option", {}, name)));
    fillSteps();
  }
  function fillSteps() {
    const recipe = (recipes[byId("train-model").value] || {})[byId("train-recipe").value];
    if (recipe) byId("train-steps").value = recipe.steps;
  }
  byId("train-model").addEventListener("change", fillRecipes);
  byId("train-recipe").addEventListener("change", fillSteps);

  async function act(request) {
    try {
      const run = await request();
      follow(run.name);
      refreshRuns();
    } catch (problem) {
      status.textContent = problem.message;
    }
  }
  byId("train-form").addEventListener("submit", (event) => {
    event.preventDefault();
    act(() => api("POST", "/api/runs", {
      model: byId("train-model").value, recipe: byId("train-recipe").value, steps: Number(byId("train-steps").value),
    }));
  });
  byId("train-stop").addEventListener("click", async () => {
    try {
      showProgress({ ...(await api("POST", `/api/runs/${encodeURIComponent(shown)}/stop`)), steps_per_second: null });
    } catch (problem) {
      status.textContent = problem.message;
    }
  });
  byId("train-resume").addEventListener("click", () => act(() => api("POST", `/api/runs/${encodeURIComponent(shown)}/resume`)));

  // a run started by another panel (the corrections' "Learn from them"): follow it here
  document.addEventListener("digitrec:run-started", (event) => { follow(event.detail.name); refreshRuns(); });
  // another panel that chose the model (the corrections' "Use"): show it in the runs list
  document.addEventListener("digitrec:model-changed", () => { refreshRuns().catch(() => {}); });

  async function start() {
    draw();
    const training = await api("GET", "/api/training");
    recipes = training.recipes;
    if (!training.enabled) {
      const off = byId("train-off");
      off.hidden = false;
      off.textContent = training.reason;
      byId("train-fields").disabled = true;
      document.querySelectorAll("[data-bundled]").forEach((button) => { button.disabled = true; });
      byId("train").classList.add("disabled");
    }
    fillRecipes();
    await refreshRuns();
    if (training.active) follow(training.active);  // a run started before this page opened: re-attach
  }
  start().catch((problem) => { status.textContent = `Training panel: ${problem.message}`; });
})();
