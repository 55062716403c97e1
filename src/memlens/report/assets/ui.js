/* memlens ui: the form's address, its submission to a worker, progress, and the result drawn
   by MemlensReport (report.js). */
(function () {
  var form = document.getElementById("form");
  var status = document.getElementById("status");
  var error = document.getElementById("error");
  var report = document.getElementById("report");

  function values() {
    var out = {};
    Array.prototype.forEach.call(form.elements, function (e) {
      if (!e.name) return;
      out[e.name] = e.type === "checkbox" ? e.checked : e.value;
    });
    return out;
  }
  function fill(params) {
    Array.prototype.forEach.call(form.elements, function (e) {
      if (!e.name || !params.has(e.name)) return;
      var v = params.get(e.name);
      if (e.type === "checkbox") e.checked = v === "true" || v === "on" || v === "1";
      else e.value = v;
    });
  }
  function share(v) {
    var q = new URLSearchParams();
    Array.prototype.forEach.call(form.elements, function (e) {
      if (!e.name) return;
      var now = e.type === "checkbox" ? e.checked : e.value;
      var initial = e.type === "checkbox" ? e.defaultChecked :
        (e.tagName === "SELECT" ? (Array.prototype.filter.call(e.options, function (o) { return o.defaultSelected; })[0] || e.options[0] || {}).value : e.defaultValue);
      if (now !== initial || e.name === "model") q.set(e.name, String(now));
    });
    history.replaceState(null, "", "?" + q.toString());
  }

  function poll(id) {
    fetch("api/jobs/" + id).then(function (r) { return r.json(); }).then(function (job) {
      if (job.state === "running") {
        status.textContent = job.what + "… " + (job.traces !== undefined ? job.traces + " traces, " : "") +
          job.elapsed.toFixed(1) + " s";
        setTimeout(function () { poll(id); }, 250);
        return;
      }
      form.querySelector("button").disabled = false;
      if (job.state === "error") {
        status.textContent = "";
        error.textContent = job.error;
        MemlensReport.clear(report);
        report.setAttribute("data-state", "error");
        return;
      }
      status.textContent = job.what + ": done in " + job.elapsed.toFixed(1) + " s";
      MemlensReport.render(report, job.data);
      report.setAttribute("data-state", "done");
    }).catch(function (e) {
      form.querySelector("button").disabled = false;
      error.textContent = "error: " + e;
    });
  }

  function run() {
    var v = values();
    share(v);
    error.textContent = "";
    report.setAttribute("data-state", "running");
    form.querySelector("button").disabled = true;
    status.textContent = "starting…";
    fetch("api/run", { method: "POST", headers: { "Content-Type": "application/json" },
                       body: JSON.stringify(v) })
      .then(function (r) { return r.json(); })
      .then(function (j) { poll(j.job); });
  }
  form.addEventListener("submit", function (e) { e.preventDefault(); run(); });

  function models(tries) {
    fetch("api/models").then(function (r) { return r.json(); }).then(function (names) {
      if (!names.length && tries > 0) { setTimeout(function () { models(tries - 1); }, 2000); return; }
      var list = document.getElementById("models");
      names.forEach(function (n) { list.appendChild(new Option(n)); });
    });
  }
  models(30);

  var params = new URLSearchParams(location.search);
  if (params.has("model")) { fill(params); run(); }
})();
