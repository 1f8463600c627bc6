/* The dashboard's charts and its small helpers (confirm, copy): reads the JSON the page embeds (#chart-data) and draws it with Chart.js. No inline script. */
(function () {
  "use strict";
  // Revoking asks first; the listener lives here because the page's CSP allows no inline handlers.
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.getAttribute("data-confirm"))) event.preventDefault();
    });
  });

  // "Copy" next to a value shown once (a new key): the clipboard API, else select it for the user to copy.
  document.querySelectorAll("button[data-copy]").forEach(function (button) {
    button.addEventListener("click", function () {
      var field = document.querySelector(button.getAttribute("data-copy"));
      if (!field) return;
      field.select();
      var copied = function () { button.textContent = "Copied"; };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(field.value).then(copied, function () { document.execCommand("copy"); copied(); });
      } else {
        document.execCommand("copy");
        copied();
      }
    });
  });

  var source = document.getElementById("chart-data");
  if (!source || typeof Chart === "undefined") return;
  var data = JSON.parse(source.textContent);

  var C = {
    prompt: "#6366f1", completion: "#14b8a6", cost: "#f59e0b", ok: "#cbd5e1", error: "#ef4444",
    grid: "rgba(15, 23, 42, 0.06)", text: "#475569"
  };
  Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
  Chart.defaults.font.size = 12;
  Chart.defaults.color = C.text;
  Chart.defaults.plugins.legend.labels.boxWidth = 10;
  Chart.defaults.plugins.legend.labels.boxHeight = 10;
  Chart.defaults.plugins.legend.position = "bottom";
  Chart.defaults.maintainAspectRatio = false;
  Chart.defaults.animation.duration = 300;

  var integer = new Intl.NumberFormat("en-US");
  var compact = new Intl.NumberFormat("en-US", { notation: "compact", maximumFractionDigits: 1 });
  function money(currency, value) {
    var digits = Math.abs(value) > 0 && Math.abs(value) < 0.01 ? 4 : 2;
    return new Intl.NumberFormat("en-US", {
      style: "currency", currency: currency.toUpperCase(), minimumFractionDigits: digits, maximumFractionDigits: digits
    }).format(value);
  }
  function axes(stacked, tick, horizontal) {
    var value = { stacked: stacked, beginAtZero: true, grid: { color: C.grid }, border: { display: false },
                  ticks: { callback: tick, maxTicksLimit: 6 } };
    var category = { stacked: stacked, grid: { display: false }, border: { display: false },
                     ticks: { autoSkip: true, maxRotation: 0, maxTicksLimit: horizontal ? 20 : 8 } };
    return horizontal ? { x: value, y: category } : { x: category, y: value };
  }
  function tokenTooltip(ctx) { return " " + ctx.dataset.label + ": " + integer.format(ctx.parsed[ctx.chart.options.indexAxis === "y" ? "x" : "y"]) + " tokens"; }
  function draw(id, config) {
    var el = document.getElementById(id);
    if (el) new Chart(el, config);
  }
  function bar(color, label, values) {
    return { label: label, data: values, backgroundColor: color, borderRadius: 3, maxBarThickness: 28 };
  }

  if (data.tokens) draw("chart-tokens", {
    type: "bar",
    data: { labels: data.tokens.labels, datasets: [
      bar(C.prompt, "Prompt tokens", data.tokens.prompt),
      bar(C.completion, "Completion tokens", data.tokens.completion)
    ] },
    options: { scales: axes(true, function (v) { return compact.format(v); }),
               interaction: { mode: "index", intersect: false },
               plugins: { tooltip: { callbacks: { label: tokenTooltip } } } }
  });

  if (data.cost) draw("chart-cost", {
    type: "line",
    data: { labels: data.cost.labels, datasets: [{
      label: "Cost", data: data.cost.cost, borderColor: C.cost, backgroundColor: "rgba(245, 158, 11, 0.15)",
      fill: true, tension: 0, pointRadius: data.cost.cost.length <= 40 ? 2.5 : 0, pointHoverRadius: 5, borderWidth: 2,
      pointBackgroundColor: C.cost
    }] },
    options: { scales: axes(false, function (v) { return money(data.cost.currency, v); }),
               interaction: { mode: "index", intersect: false },
               plugins: { legend: { display: false },
                          tooltip: { callbacks: { label: function (ctx) { return " " + money(data.cost.currency, ctx.parsed.y); } } } } }
  });

  if (data.requests) draw("chart-requests", {
    type: "bar",
    data: { labels: data.requests.labels, datasets: [
      bar(C.ok, "Succeeded", data.requests.ok),
      bar(C.error, "Errors (HTTP ≥ 400)", data.requests.errors)
    ] },
    options: { scales: axes(true, function (v) { return Number.isInteger(v) ? compact.format(v) : ""; }),
               interaction: { mode: "index", intersect: false } }
  });

  function ranking(id, block) {
    if (!block) return;
    draw(id, {
      type: "bar",
      data: { labels: block.labels, datasets: [
        bar(C.prompt, "Prompt tokens", block.prompt),
        bar(C.completion, "Completion tokens", block.completion)
      ] },
      options: { indexAxis: "y", scales: axes(true, function (v) { return compact.format(v); }, true),
                 interaction: { mode: "index", intersect: false },
                 plugins: { tooltip: { callbacks: { label: tokenTooltip } } } }
    });
  }
  ranking("chart-tenants", data.tenants);
  ranking("chart-models", data.models);

})();
