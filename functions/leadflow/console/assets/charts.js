/* leadflow console: draws the pages' charts with Chart.js (chart.umd.min.js, loaded first).

Nothing on a page is executed inline (the pages' Content-Security-Policy allows scripts
from the console's own assets only): a chart is a canvas naming a JSON block, which the
server renders with Jinja's `tojson` and the browser never runs:

  <div class="chart"><canvas data-chart="decay-chart" role="img" aria-label="…"></canvas></div>
  <script type="application/json" id="decay-chart">{…}</script>

The JSON block:

  {
    "type": "line" | "bar",
    "labels": ["0", "3", …],             // the x axis (categories), one per value
    "datasets": [                         // one line, or one series of bars, each
      {"label": "page_view", "data": [4.5, 3.9, …]}    // numbers, or null for a gap
    ],
    "x": {"title": "days from now"},      // optional
    "y": {"title": "points",              // optional
          "percent": false,               // true: values are fractions, 0.25 shows as 25 %
          "min": 0, "max": 1},            // optional bounds (fractions when percent)
    "horizontal": false,                  // bars only: categories down the side
    "stacked": false                      // bars only: series stacked
  }

Colours come from one palette, in dataset order (a dataset may set "color": "#rrggbb").
Every chart's figures are also in the page's HTML (a table or text beside it), so a page
is complete without JavaScript: charts only appear once drawn (the `charts-on` class).
*/
(function () {
  "use strict";

  // Okabe & Ito's palette: told apart with every common colour-vision deficiency.
  var PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"];

  function percentText(value, digits) {
    if (value === null || value === undefined || isNaN(value)) {
      return "—";
    }
    return (value * 100).toFixed(digits) + " %";
  }

  function axis(spec, fallbackTitle) {
    spec = spec || {};
    var out = {grid: {color: "#eef0f3"}, ticks: {color: "#667085"}};
    var title = spec.title || fallbackTitle;
    if (title) {
      out.title = {display: true, text: String(title), color: "#667085"};
    }
    if (typeof spec.min === "number") {
      out.min = spec.min;
    }
    if (typeof spec.max === "number") {
      out.max = spec.max;
    }
    return out;
  }

  function config(spec) {
    var type = spec.type === "bar" ? "bar" : "line";
    var y = spec.y || {};
    var percent = y.percent === true;
    var horizontal = type === "bar" && spec.horizontal === true;
    var stacked = type === "bar" && spec.stacked === true;
    var datasets = (spec.datasets || []).map(function (set, i) {
      var color = typeof set.color === "string" ? set.color : PALETTE[i % PALETTE.length];
      return {
        label: String(set.label === undefined ? "" : set.label),
        data: Array.isArray(set.data) ? set.data : [],
        borderColor: color,
        backgroundColor: type === "bar" ? color : color + "33",
        borderWidth: 2,
        pointRadius: type === "line" ? 0 : undefined,
        pointHitRadius: 6,
        tension: 0,
        spanGaps: false
      };
    });
    var valueAxis = axis(y);
    if (percent) {
      valueAxis.ticks.callback = function (value) {
        return percentText(value, 0);
      };
      if (valueAxis.min === undefined) {
        valueAxis.min = 0;
      }
    }
    var categoryAxis = axis(spec.x);
    if (stacked) {
      valueAxis.stacked = true;
      categoryAxis.stacked = true;
    }
    return {
      type: type,
      data: {labels: Array.isArray(spec.labels) ? spec.labels.map(String) : [], datasets: datasets},
      options: {
        animation: false,
        responsive: true,
        maintainAspectRatio: false,
        indexAxis: horizontal ? "y" : "x",
        interaction: {mode: "index", intersect: false},
        scales: horizontal ? {x: valueAxis, y: categoryAxis} : {x: categoryAxis, y: valueAxis},
        plugins: {
          legend: {display: datasets.length > 1, position: "bottom", labels: {boxWidth: 12}},
          tooltip: {
            callbacks: percent ? {
              label: function (item) {
                return item.dataset.label + ": " + percentText(item.raw, 1);
              }
            } : {}
          }
        }
      }
    };
  }

  function draw(canvas) {
    var source = document.getElementById(canvas.getAttribute("data-chart") || "");
    if (!source || source.getAttribute("type") !== "application/json") {
      return;
    }
    var spec;
    try {
      spec = JSON.parse(source.textContent);
    } catch (err) {
      return; // the figures are in the page's table all the same
    }
    if (!window.Chart.getChart(canvas)) {
      new window.Chart(canvas, config(spec));
    }
  }

  function drawAll() {
    if (typeof window.Chart !== "function") {
      return;
    }
    // Shown first, so that each chart is sized to its box as it is drawn.
    document.documentElement.classList.add("charts-on");
    var canvases = document.querySelectorAll("canvas[data-chart]");
    for (var i = 0; i < canvases.length; i++) {
      draw(canvases[i]);
    }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", drawAll);
  } else {
    drawAll();
  }
})();
