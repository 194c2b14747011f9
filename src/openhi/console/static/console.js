// openhi console: confirmations for destructive forms, and uploads through STOW-RS (no build step).
(function () {
  "use strict";

  document.querySelectorAll("form.confirm").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.getAttribute("data-confirm") || "Are you sure?")) {
        event.preventDefault();
      }
    });
  });

  var upload = document.getElementById("upload");
  if (!upload) {
    return;
  }
  var BATCH_FILES = 16;
  var BATCH_BYTES = 64 * 1024 * 1024;
  var progress = document.getElementById("up-progress");
  var status = document.getElementById("up-status");
  var results = document.getElementById("up-results");
  var searchUrl = upload.getAttribute("data-search");

  function batches(files) {
    var out = [];
    var current = [];
    var size = 0;
    files.forEach(function (file) {
      if (current.length && (current.length >= BATCH_FILES || size + file.size > BATCH_BYTES)) {
        out.push(current);
        current = [];
        size = 0;
      }
      current.push(file);
      size += file.size;
    });
    if (current.length) {
      out.push(current);
    }
    return out;
  }

  function multipart(files, boundary) {
    var parts = [];
    files.forEach(function (file) {
      parts.push("--" + boundary + "\r\nContent-Type: application/dicom\r\n\r\n");
      parts.push(file);
      parts.push("\r\n");
    });
    parts.push("--" + boundary + "--\r\n");
    return new Blob(parts);
  }

  function value(item, tag) {
    var element = item && item[tag];
    return element && element.Value ? element.Value[0] : "";
  }

  function addRow(name, text, link, ok) {
    var row = results.tBodies[0].insertRow();
    row.className = ok ? "added" : "removed";
    row.insertCell().textContent = name;
    row.insertCell().textContent = text;
    var cell = row.insertCell();
    if (link) {
      var a = document.createElement("a");
      a.href = link;
      a.textContent = "find the study";
      cell.appendChild(a);
    }
  }

  function send(files, done, sent, total) {
    return new Promise(function (resolve, reject) {
      var boundary = "openhi-" + Math.random().toString(16).slice(2) + Date.now().toString(16);
      var xhr = new XMLHttpRequest();
      xhr.open("POST", upload.getAttribute("data-url"));
      xhr.setRequestHeader("Content-Type", 'multipart/related; type="application/dicom"; boundary=' + boundary);
      xhr.setRequestHeader("Accept", "application/dicom+json");
      xhr.upload.onprogress = function (event) {
        if (event.lengthComputable) {
          progress.value = Math.round(((sent + event.loaded / event.total * files.length) / total) * 100);
        }
      };
      xhr.onload = function () {
        var answer = null;
        try {
          answer = JSON.parse(xhr.responseText);
        } catch (e) {
          answer = null;
        }
        resolve({ status: xhr.status, answer: answer, files: files });
      };
      xhr.onerror = function () {
        reject(new Error("the connection failed"));
      };
      xhr.send(multipart(files, boundary));
    });
  }

  upload.addEventListener("submit", function (event) {
    event.preventDefault();
    var files = [];
    ["up-files", "up-folder"].forEach(function (id) {
      Array.prototype.forEach.call(document.getElementById(id).files, function (f) {
        files.push(f);
      });
    });
    if (!files.length) {
      status.textContent = "Choose files or a folder first.";
      return;
    }
    var groups = batches(files);
    var stored = 0;
    var failed = 0;
    var sent = 0;
    progress.hidden = false;
    progress.value = 0;
    results.hidden = false;
    results.tBodies[0].innerHTML = "";
    upload.querySelector("button").disabled = true;
    status.textContent = "Uploading " + files.length + " file(s)…";
    var chain = Promise.resolve();
    groups.forEach(function (group) {
      chain = chain.then(function () {
        return send(group, stored + failed, sent, files.length).then(function (reply) {
          sent += group.length;
          var answer = reply.answer || {};
          var refs = (answer["00081199"] && answer["00081199"].Value) || [];
          var fails = (answer["00081198"] && answer["00081198"].Value) || [];
          var studyUrl = value(answer, "00081190");
          var studyUid = studyUrl ? studyUrl.split("/studies/")[1] : "";
          var link = studyUid ? searchUrl + "?study_uid=" + encodeURIComponent(studyUid.split("?")[0]) : "";
          refs.forEach(function (item) {
            stored += 1;
            addRow(value(item, "00081155"), "stored", link, true);
          });
          fails.forEach(function (item) {
            failed += 1;
            addRow(value(item, "00081155") || "(unreadable)", "failed, reason " + value(item, "00081197"), "", false);
          });
          if (!refs.length && !fails.length) {
            failed += group.length;
            var message = (reply.answer && reply.answer.message) || "HTTP " + reply.status;
            group.forEach(function (f) {
              addRow(f.webkitRelativePath || f.name, "failed: " + message, "", false);
            });
          }
          progress.value = Math.round((sent / files.length) * 100);
          status.textContent = "Stored " + stored + ", failed " + failed + " of " + files.length + "…";
        });
      });
    });
    chain
      .then(function () {
        status.textContent = "Done: stored " + stored + ", failed " + failed + " of " + files.length + ".";
        upload.setAttribute("data-done", "true");
      })
      .catch(function (error) {
        status.textContent = "Upload stopped: " + error.message;
        upload.setAttribute("data-done", "error");
      })
      .then(function () {
        upload.querySelector("button").disabled = false;
      });
  });
})();
