// The console's small scripts: copy buttons, confirmations, the overview chart. No file from the internet.
"use strict";

document.querySelectorAll("[data-copy]").forEach((button) => {
  button.addEventListener("click", async () => {
    const source = document.getElementById(button.dataset.copy);
    const text = source.value !== undefined ? source.value : source.textContent;
    try {
      await navigator.clipboard.writeText(text);
    } catch (e) {
      source.select && source.select();
      document.execCommand("copy");
    }
    button.textContent = "Copied";
  });
});

document.querySelectorAll("form[data-confirm]").forEach((form) => {
  form.addEventListener("submit", (event) => {
    if (!window.confirm(form.dataset.confirm)) event.preventDefault();
  });
});

const chartData = document.getElementById("console-chart-data");
if (chartData && window.Chart) {
  const data = JSON.parse(chartData.textContent);
  const palette = ["#6366f1", "#22c55e", "#f59e0b", "#ef4444", "#06b6d4", "#a855f7"];
  new window.Chart(document.getElementById("chart-console-tokens"), {
    type: "bar",
    data: {
      labels: data.labels,
      datasets: data.series.map((s, i) => ({ label: s.label, data: s.data, backgroundColor: palette[i % palette.length] })),
    },
    options: { responsive: true, maintainAspectRatio: false, scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true } } },
  });
}

function csrfToken(form) {
  const field = form.querySelector("input[name=_csrf_token]");
  return field ? field.value : "";
}

function errorText(xhrOrBody, status) {
  try {
    const body = typeof xhrOrBody === "string" ? JSON.parse(xhrOrBody) : xhrOrBody;
    if (body && body.error && body.error.message) return body.error.message;
  } catch (e) { /* not JSON */ }
  return "The request failed (HTTP " + status + ").";
}

// New deployment: the upload goes by XMLHttpRequest so that its progress shows; the CSRF token rides in a header.
const deployForm = document.getElementById("deploy-form");
if (deployForm) {
  deployForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const status = document.getElementById("deploy-status");
    const progress = document.getElementById("upload-progress");
    const data = new FormData();
    data.append("name", deployForm.elements.name.value);
    data.append("base_model", deployForm.elements.base_model.value);
    let files = 0;
    deployForm.querySelectorAll("input[type=file]").forEach((input) => {
      for (const file of input.files) { data.append(input.name, file, file.name); files += 1; }
    });
    if (!files) { status.textContent = "Choose an adapter archive, or adapter_config.json and adapter_model.safetensors."; return; }
    const xhr = new XMLHttpRequest();
    xhr.open("POST", deployForm.action);
    xhr.setRequestHeader("X-CSRFToken", csrfToken(deployForm));
    xhr.upload.onprogress = (e) => {
      if (e.lengthComputable) { progress.value = Math.round((100 * e.loaded) / e.total); progress.textContent = progress.value + "%"; }
    };
    xhr.upload.onload = () => { progress.value = 100; status.textContent = "Uploaded; deploying…"; };
    xhr.onload = () => {
      if (xhr.status === 201) {
        const d = JSON.parse(xhr.responseText);
        status.textContent = d.status === "ready" ? "Deployed: " + d.id + " is ready." : "Deployment failed: " + (d.status_reason || d.status);
        window.setTimeout(() => window.location.reload(), 600);
      } else {
        status.textContent = "Not deployed: " + errorText(xhr.responseText, xhr.status);
      }
    };
    xhr.onerror = () => { status.textContent = "The upload was interrupted. Try again."; };
    status.textContent = "Uploading…";
    xhr.send(data);
  });
}

// Playground: the reply streams in (fetch + ReadableStream of the server-sent events), then its tokens and cost.
const playground = document.getElementById("playground-form");
if (playground) {
  playground.addEventListener("submit", async (event) => {
    event.preventDefault();
    const reply = document.getElementById("pg-reply");
    const usage = document.getElementById("pg-usage");
    const f = playground.elements;
    const messages = [];
    if (f.system.value.trim()) messages.push({ role: "system", content: f.system.value });
    messages.push({ role: "user", content: f.message.value });
    const body = { model: f.model.value, messages, temperature: parseFloat(f.temperature.value), max_tokens: parseInt(f.max_tokens.value, 10) };
    reply.textContent = "";
    usage.textContent = "";
    const button = playground.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      const response = await fetch("/console/playground/chat", {
        method: "POST",
        headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken(playground) },
        body: JSON.stringify(body),
      });
      if (!response.ok) { reply.textContent = errorText(await response.text(), response.status); return; }
      const requestId = response.headers.get("x-request-id");
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      let tokens = null;
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const event = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          for (const line of event.split("\n")) {
            if (!line.startsWith("data:")) continue;
            const data = line.slice(5).trim();
            if (data === "[DONE]") continue;
            const chunk = JSON.parse(data);
            if (chunk.error) { reply.textContent += "\n" + chunk.error.message; continue; }
            const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
            if (delta && delta.content) reply.textContent += delta.content;
            if (chunk.usage) tokens = chunk.usage;
          }
        }
      }
      if (tokens) {
        usage.textContent = tokens.prompt_tokens + " prompt tokens · " + tokens.completion_tokens + " completion tokens · cost: …";
        usage.dataset.promptTokens = tokens.prompt_tokens;
        usage.dataset.completionTokens = tokens.completion_tokens;
      }
      if (requestId && tokens) showCost(requestId, tokens, usage, playground.dataset.currency, 0);
    } catch (e) {
      reply.textContent += "\nThe reply was interrupted.";
    } finally {
      button.disabled = false;
    }
  });
}

function showCost(requestId, tokens, usage, currency, attempt) {
  fetch("/console/playground/cost/" + encodeURIComponent(requestId)).then((r) => r.json()).then((c) => {
    if (!c.found) {
      if (attempt < 40) window.setTimeout(() => showCost(requestId, tokens, usage, currency, attempt + 1), 250);
      return;
    }
    const major = c.cost_micros / 1e6 / 100;
    const trial = c.trial_tokens_used ? " (" + c.trial_tokens_used + " trial tokens)" : "";
    usage.textContent = tokens.prompt_tokens + " prompt tokens · " + tokens.completion_tokens + " completion tokens · cost: "
      + major.toFixed(major && major < 0.01 ? 6 : 2) + " " + (currency || "").toUpperCase() + trial;
    usage.dataset.cost = "shown";
  });
}
