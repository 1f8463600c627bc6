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
