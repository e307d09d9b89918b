// tunewise ui: the few things the server-rendered pages need a script for.
(function () {
  "use strict";
  function $(id) { return document.getElementById(id); }

  // New decision: uploads go as the raw request body (no multipart), the stored path fills the field.
  document.querySelectorAll("input[type=file][data-target]").forEach(function (input) {
    input.addEventListener("change", function () {
      var file = input.files[0], status = $("upload-status");
      if (!file) return;
      status.textContent = "Uploading " + file.name + "…";
      fetch("/upload?name=" + encodeURIComponent(file.name), {method: "POST", body: file, credentials: "same-origin"})
        .then(function (r) { return r.json().then(function (body) { return {ok: r.ok, body: body}; }); })
        .then(function (res) {
          if (!res.ok) { status.textContent = res.body.error || "upload failed"; status.className = "error"; return; }
          $(input.dataset.target).value = res.body.path;
          status.className = "muted";
          status.textContent = file.name + " uploaded (" + Math.round(res.body.bytes / 1024) + " KiB).";
        })
        .catch(function (err) { status.textContent = "upload failed: " + err; status.className = "error"; });
    });
  });
  var example = $("use-example");
  if (example) example.addEventListener("click", function () {
    $("train").value = example.dataset.train;
    $("eval").value = example.dataset.eval;
    $("corpus").value = "";
    $("data-form").submit();
  });

  // Run: live progress over server-sent events.
  var job = $("job");
  function duration(s) {
    if (s === null || s === undefined) return "-";
    s = Math.round(s);
    if (s >= 3600) return Math.floor(s / 3600) + " h " + Math.floor(s % 3600 / 60) + " min";
    if (s >= 60) return Math.floor(s / 60) + " min " + (s % 60) + " s";
    return s + " s";
  }
  if (job && job.dataset.final === "no" && window.EventSource) {
    var source = new EventSource("/jobs/" + job.dataset.job + "/events");
    source.addEventListener("state", function (e) {
      var s = JSON.parse(e.data);
      var status = $("job-status");
      status.textContent = s.status;
      status.className = "status " + s.status;
      $("job-position").textContent = s.position ? "#" + s.position + " in the queue" : "";
      $("job-rung").textContent = s.rung || (s.status === "queued" ? "waiting for the run ahead" : "starting…");
      $("job-progress").max = s.total || 1;
      $("job-progress").value = s.done || 0;
      $("job-count").textContent = (s.done || 0) + " / " + (s.total || "?");
      $("job-elapsed").textContent = duration(s.elapsed_s);
      $("job-eta").textContent = duration(s.eta_s);
      $("job-loss").textContent = s.loss || "";
      $("job-decision").textContent = s.decision || "";
      $("job-message").textContent = s.message || "";
      $("job-message").className = s.status === "failed" ? "error-text" : "note";
      $("job-log").textContent = (s.log || []).join("\n");
      var steps = $("job-rungs");
      steps.innerHTML = "";
      (s.rungs_seen || []).forEach(function (name, i) {
        var li = document.createElement("li");
        li.textContent = name;
        if (i < s.rungs_seen.length - 1 || s.status === "finished") li.className = "done";
        steps.appendChild(li);
      });
      var final = ["finished", "failed", "cancelled", "interrupted"].indexOf(s.status) >= 0;
      $("cancel-form").hidden = final;
      $("resume-form").hidden = ["cancelled", "failed", "interrupted"].indexOf(s.status) < 0;
      if (s.status === "finished" && s.run_id) {
        $("open-report").href = "/runs/" + encodeURIComponent(s.run_id);
        $("job-links").querySelector("a.secondary").href = "/playground?run=" + encodeURIComponent(s.run_id);
        $("job-links").hidden = false;
      }
    });
    source.addEventListener("end", function () { source.close(); });
  }

  // Playground: clear the box after each answer, keep the newest turn in view.
  document.body.addEventListener("htmx:afterRequest", function (e) {
    if (e.target && e.target.id === "chat-form" && e.detail.successful) {
      $("message").value = "";
      $("message").focus();
      var chat = $("chat");
      chat.scrollTop = chat.scrollHeight;
    }
  });
})();
