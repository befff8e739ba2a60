// The console's own script: charts (uPlot) drawn from the JSON a page carries, copy buttons, and the typed-name
// confirmation. No inline scripts anywhere (the pages' Content-Security-Policy allows this origin's files alone).
(function () {
  "use strict";

  function drawCharts(root) {
    root.querySelectorAll("[data-chart]").forEach(function (box) {
      if (box.dataset.drawn || typeof uPlot === "undefined") return;
      var source = document.getElementById(box.dataset.chart);
      if (!source) return;
      var chart = JSON.parse(source.textContent);
      var times = {};
      chart.series.forEach(function (s) { s.points.forEach(function (p) { times[Date.parse(p[0]) / 1000] = true; }); });
      var xs = Object.keys(times).map(Number).sort(function (a, b) { return a - b; });
      box.dataset.drawn = "1";
      if (!xs.length) { box.textContent = "No data in this period."; box.classList.add("note"); box.style.minHeight = "0"; return; }
      var index = {}; xs.forEach(function (x, i) { index[x] = i; });
      var data = [xs];
      var series = [{}];
      var colours = ["#1f5fa8", "#b3261e", "#1a6e31", "#8a5300", "#6b3fa0", "#00707a"];
      chart.series.forEach(function (s, n) {
        var ys = xs.map(function () { return null; });
        s.points.forEach(function (p) { ys[index[Date.parse(p[0]) / 1000]] = p[1]; });
        data.push(ys);
        series.push({ label: s.label, stroke: colours[n % colours.length], width: 1.5, spanGaps: true });
      });
      var width = Math.max(240, box.clientWidth || 600);
      new uPlot({ width: width, height: 200, series: series, axes: [{}, { label: chart.unit, size: 60 }],
                  legend: { live: false } }, data, box);
    });
  }

  function copyButtons(root) {
    root.querySelectorAll("button[data-copy]").forEach(function (button) {
      if (button.dataset.ready) return;
      button.dataset.ready = "1";
      button.addEventListener("click", function () {
        var text = document.getElementById(button.dataset.copy).textContent;
        var done = function () { button.textContent = "Copied"; setTimeout(function () { button.textContent = "Copy"; }, 1500); };
        if (navigator.clipboard) { navigator.clipboard.writeText(text).then(done, done); } else { done(); }
      });
    });
  }

  function typedConfirmations(root) {
    root.querySelectorAll("input[data-confirm-name]").forEach(function (input) {
      var button = document.getElementById(input.dataset.confirmButton);
      if (!button || input.dataset.ready) return;
      input.dataset.ready = "1";
      var update = function () { button.disabled = input.value !== input.dataset.confirmName; };
      input.addEventListener("input", update);
      update();
    });
  }

  // A table wider than the screen scrolls in its box: the box then takes the keyboard's focus, so the arrow
  // keys scroll it too, and is named after the heading before it.
  function scrollableBoxes(root) {
    root.querySelectorAll(".overflow-auto").forEach(function (box) {
      if (box.scrollWidth <= box.clientWidth) { box.removeAttribute("tabindex"); return; }
      box.setAttribute("tabindex", "0");
      box.setAttribute("role", "region");
      var heading = box.closest("section, main").querySelector("h2, h1");
      box.setAttribute("aria-label", (heading ? heading.textContent.trim() + ": " : "") + "table, scrolls sideways");
    });
  }

  function enliven(root) { drawCharts(root); copyButtons(root); typedConfirmations(root); scrollableBoxes(document); }

  document.addEventListener("DOMContentLoaded", function () { enliven(document); });
  document.addEventListener("htmx:afterSettle", function (event) { enliven(event.target); });
  window.addEventListener("resize", function () { scrollableBoxes(document); });
})();
