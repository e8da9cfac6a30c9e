/*
 * flask_execute: watch a task (or a pool) from the browser.
 *
 *   <script src="/tasks/watch.js"></script>
 *   var job = flaskExecute.watch("/tasks/" + token, {
 *     onProgress: function (status) { ... },  // every status, the last one included
 *     onDone: function (status) { ... },      // once, when the task has ended
 *     onError: function (error) { ... }       // a failed request (404: stops)
 *   });
 *   job.cancel();   // POST <url>/cancel
 *   job.close();    // stop watching
 *
 * Server-sent events (<url>/events) when the browser has EventSource, else, or when
 * the stream fails, polling <url> every `interval` milliseconds (default 1000). An
 * error thrown by a handler does not stop the watch; it is rethrown on its own.
 * Plain JavaScript, no framework, no build step.
 */
(function (global) {
  "use strict";

  function cancel(url) {
    return global
      .fetch(url + "/cancel", { method: "POST", credentials: "same-origin" })
      .then(function (response) {
        if (!response.ok) {
          throw new Error("cancel failed: HTTP " + response.status);
        }
        return response.json();
      });
  }

  // A handler's own error must not stop the watch (an onProgress that throws would
  // never see onDone, and polling would go on): it is thrown later, uncaught, so it
  // still shows in the console.
  function call(handler, value) {
    if (!handler) {
      return;
    }
    try {
      handler(value);
    } catch (error) {
      global.setTimeout(function () {
        throw error;
      }, 0);
    }
  }

  function watch(url, handlers) {
    handlers = handlers || {};
    var interval = handlers.interval || 1000;
    var closed = false;
    var source = null;
    var timer = null;

    function close() {
      closed = true;
      if (source) {
        source.close();
        source = null;
      }
      if (timer) {
        global.clearTimeout(timer);
        timer = null;
      }
    }

    function fail(error) {
      call(handlers.onError, error);
    }

    function report(status) {
      if (closed) {
        return;
      }
      if (status.done) {
        close();
      }
      call(handlers.onProgress, status);
      if (status.done) {
        call(handlers.onDone, status);
      }
    }

    function poll() {
      global
        .fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" })
        .then(function (response) {
          if (response.status === 404) {
            close();  // a bad or expired token never becomes good
            throw new Error("unknown or expired task: HTTP 404");
          }
          if (!response.ok) {
            throw new Error("status failed: HTTP " + response.status);
          }
          return response.json();
        })
        .then(report)
        .catch(fail)
        .then(function () {
          if (!closed) {
            timer = global.setTimeout(poll, interval);
          }
        });
    }

    function listen() {
      source = new global.EventSource(url + "/events");
      var onEvent = function (event) {
        report(JSON.parse(event.data));
      };
      source.addEventListener("progress", onEvent);
      source.addEventListener("done", onEvent);
      source.onerror = function () {
        if (closed) {
          return;
        }
        // The stream failed (or the server cannot stream): poll instead.
        source.close();
        source = null;
        poll();
      };
    }

    if (global.EventSource && !handlers.polling) {
      listen();
    } else {
      poll();
    }
    return {
      close: close,
      cancel: function () {
        return cancel(url);
      },
    };
  }

  global.flaskExecute = { watch: watch, cancel: cancel };
})(window);
