// The console's only script: keeps the overview's running jobs current.
// It polls GET /console/running every 2 s (with the session cookie), not
// while the tab is hidden, and not while the Pause button is pressed.
// On a plan's page it polls the dry run's status the same way, and shows
// the outcome (a reload) once the dry run has finished.
// Everything it writes goes through textContent and attributes, never HTML.
"use strict";

(function () {
  var PERIOD_MS = 2000;

  // Polls `url` every 2 s and hands each JSON body to `onBody`: not while
  // the tab is hidden, and not while the Pause button is pressed. A
  // response that sends the browser to the login page makes it go there.
  function poller(url, onBody) {
    var pauseButton = document.getElementById("pause");
    var paused = false;
    var timer = null;

    function poll() {
      timer = null;
      if (paused || document.hidden) {
        return;
      }
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (response) {
          if (response.redirected || response.status === 401 || response.status === 303) {
            window.location.assign("/login");
            return null;
          }
          return response.ok ? response.json() : null;
        })
        .then(function (body) {
          if (body) {
            onBody(body);
          }
        })
        .catch(function () {})
        .then(schedule);
    }

    function schedule() {
      if (timer === null && !paused && !document.hidden) {
        timer = window.setTimeout(poll, PERIOD_MS);
      }
    }

    if (pauseButton) {
      pauseButton.addEventListener("click", function () {
        paused = !paused;
        pauseButton.setAttribute("aria-pressed", String(paused));
        pauseButton.textContent = paused ? "Resume updates" : "Pause updates";
        if (paused && timer !== null) {
          window.clearTimeout(timer);
          timer = null;
        }
        schedule();
      });
    }
    document.addEventListener("visibilitychange", schedule);
    schedule();
  }

  // The overview's running jobs.
  function watchRunning(list) {
    var emptyNote = document.querySelector("#running .empty");

    function card(job) {
      var div = document.createElement("div");
      div.className = "job";
      div.setAttribute("data-job-id", job.job_id);
      var link = document.createElement("a");
      link.href = "/jobs/" + encodeURIComponent(job.job_id);
      var code = document.createElement("code");
      code.textContent = job.job_id;
      link.appendChild(code);
      var operation = document.createElement("span");
      operation.className = "operation";
      operation.textContent = job.operation;
      var bar = document.createElement("progress");
      bar.setAttribute("aria-label", "progress");
      var summary = document.createElement("span");
      summary.className = "summary";
      div.append(link, " ", operation, bar, summary);
      return div;
    }

    function update(div, job) {
      var bar = div.querySelector("progress");
      bar.setAttribute("data-done", String(job.done));
      if (job.total === null || job.total === undefined) {
        // Indeterminate: a value without a max would draw the bar full.
        bar.removeAttribute("value");
        bar.removeAttribute("max");
      } else {
        bar.setAttribute("max", String(job.total));
        bar.setAttribute("value", String(job.done));
      }
      div.querySelector(".summary").textContent = job.summary;
    }

    function render(jobs) {
      var seen = {};
      jobs.forEach(function (job) {
        seen[job.job_id] = true;
        var div = list.querySelector('[data-job-id="' + job.job_id + '"]');
        if (!div) {
          div = card(job);
          list.appendChild(div);
        }
        update(div, job);
      });
      Array.prototype.slice.call(list.querySelectorAll(".job")).forEach(function (div) {
        if (!seen[div.getAttribute("data-job-id")]) {
          div.remove();
        }
      });
      if (emptyNote) {
        emptyNote.hidden = jobs.length > 0;
      }
    }

    poller(list.getAttribute("data-poll"), function (body) {
      if (Array.isArray(body.running)) {
        render(body.running);
      }
    });
  }

  // The plan page, while its dry run is queued or running.
  function watchPlan(box) {
    var statusText = document.getElementById("plan-status");
    var summary = box.querySelector(".summary");
    poller(box.getAttribute("data-plan-status"), function (body) {
      if (body.finished) {
        // The server renders the outcome: counts, sample, the next step.
        window.location.reload();
        return;
      }
      statusText.textContent = body.status;
      summary.textContent = body.summary;
    });
  }

  var list = document.querySelector("[data-poll]");
  if (list) {
    watchRunning(list);
  }
  var box = document.querySelector("[data-plan-status]");
  if (box) {
    watchPlan(box);
  }
})();
