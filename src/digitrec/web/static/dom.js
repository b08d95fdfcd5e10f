// Building the page's elements: text always as text (textContent), never as HTML, so nothing a server or a
// run folder sends can become markup or script on the page (the page's Content-Security-Policy forbids
// inline script as a second wall).
"use strict";

// element("td", { className: "dark", dataset: { run: name } }, "text", childElement, ...)
function element(tag, properties = {}, ...children) {
  const made = document.createElement(tag);
  for (const [key, value] of Object.entries(properties)) {
    if (key === "dataset") Object.assign(made.dataset, value);
    else if (key === "style") Object.assign(made.style, value);
    else made[key] = value;
  }
  for (const child of children) made.append(child instanceof Node ? child : String(child));
  return made;
}
