// scissorbench leaderboard: filters, lazily drawn curves, the provenance panel. No network.
(function () {
  "use strict";
  const data = window.SCISSORBENCH || { charts: {} };
  const $ = (sel, root) => Array.from((root || document).querySelectorAll(sel));
  const value = (id) => document.getElementById(id).value;

  function matches(el, key, wanted) {
    if (!wanted) return true;
    const own = el.dataset[key];
    return own === undefined || own === wanted;
  }

  function apply() {
    const backbone = value("f-backbone"), benchmark = value("f-benchmark");
    const retention = value("f-retention"), source = value("f-source");
    let shown = 0;
    $("section.board, section.efficiency").forEach((sec) => {
      const on = matches(sec, "backbone", backbone) && matches(sec, "benchmark", benchmark);
      sec.classList.toggle("hidden", !on);
    });
    $("tr.row").forEach((row) => {
      const rets = (row.dataset.retentions || "").split(" ").filter(Boolean);
      let on = matches(row, "source", source) && matches(row, "backbone", backbone) &&
        matches(row, "benchmark", benchmark);
      if (retention && !row.classList.contains("full")) on = on && rets.includes(retention);
      row.classList.toggle("hidden", !on);
      const section = row.closest("section");
      if (on && !(section && section.classList.contains("hidden"))) shown += 1;
    });
    $("th[data-retention], td[data-retention]").forEach((cell) => {
      const full = cell.dataset.retention === "100";
      cell.classList.toggle("hidden", !!retention && !full && cell.dataset.retention !== retention);
    });
    document.getElementById("shown-count").textContent = shown + " rows shown";
    draw();
  }

  function visible(el) {
    return !el.closest(".hidden") && el.getBoundingClientRect().top < window.innerHeight * 2;
  }

  function draw() {
    if (typeof Plotly === "undefined") return;
    $(".chart").forEach((div) => {
      if (div.dataset.drawn || !visible(div)) return;
      const chart = data.charts[div.dataset.chart];
      if (!chart) return;
      const axis = div.dataset.axis, source = value("f-source");
      const traces = chart.traces.filter((t) => !source || t.source === source).map((t) => ({
        x: axis === "retention" ? t.retention : t.tflops, y: t.score, text: t.text,
        name: t.name, mode: "lines+markers", hoverinfo: "name+x+y",
        line: { dash: t.source === "ours" ? "solid" : "dot", width: t.source === "ours" ? 2.5 : 1.2 },
      }));
      Plotly.newPlot(div, traces, {
        margin: { l: 50, r: 10, t: 30, b: 45 }, showlegend: true,
        legend: { font: { size: 9 } }, title: { text: axis === "retention" ?
          "accuracy vs retention" : "accuracy vs prefill TFLOPs", font: { size: 13 } },
        xaxis: { title: { text: axis === "retention" ? "retention (%)" : "prefill TFLOPs (visual tokens)" } },
        yaxis: { title: { text: "score (" + chart.unit + ")" } },
      }, { staticPlot: false, displayModeBar: false, responsive: true });
      div.dataset.drawn = "1";
    });
  }

  function redrawAll() {
    $(".chart").forEach((div) => { if (div.dataset.drawn) { Plotly.purge(div); delete div.dataset.drawn; } });
    apply();
  }

  document.addEventListener("click", (event) => {
    const cell = event.target.closest("[data-provenance]");
    const panel = document.getElementById("provenance");
    if (cell) {
      document.getElementById("provenance-text").textContent = cell.dataset.provenance;
      panel.hidden = false;
    } else if (event.target.id === "provenance-close") {
      panel.hidden = true;
    }
  });
  ["f-backbone", "f-benchmark", "f-retention"].forEach((id) =>
    document.getElementById(id).addEventListener("change", apply));
  document.getElementById("f-source").addEventListener("change", redrawAll);
  window.addEventListener("scroll", draw, { passive: true });
  const params = new URLSearchParams(window.location.search);
  ["backbone", "benchmark", "retention", "source"].forEach((k) => {
    if (params.get(k)) document.getElementById("f-" + k).value = params.get(k);
  });
  apply();
  document.body.dataset.ready = "1";
})();
