'use strict';
// Waiting on events with a deadline: tests never sleep for a fixed time.
const DEFAULT_TIMEOUT = 10_000;

function once(emitter, event, { timeout = DEFAULT_TIMEOUT } = {}) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      emitter.removeListener(event, onEvent);
      reject(new Error(`timed out after ${timeout} ms waiting for '${event}'`));
    }, timeout);
    function onEvent(...args) {
      clearTimeout(timer);
      resolve(args);
    }
    emitter.once(event, onEvent);
  });
}

// Resolves with the first `count` emissions of `event`, each as its argument list.
function many(emitter, event, count, { timeout = DEFAULT_TIMEOUT } = {}) {
  return new Promise((resolve, reject) => {
    const seen = [];
    const timer = setTimeout(() => {
      emitter.removeListener(event, onEvent);
      reject(new Error(`timed out after ${timeout} ms: ${seen.length}/${count} '${event}' events`));
    }, timeout);
    function onEvent(...args) {
      seen.push(args);
      if (seen.length === count) {
        clearTimeout(timer);
        emitter.removeListener(event, onEvent);
        resolve(seen);
      }
    }
    emitter.on(event, onEvent);
  });
}

// Polls `predicate` until it is truthy, for conditions that emit no event (a pid gone, a file written).
async function until(predicate, { timeout = DEFAULT_TIMEOUT, interval = 10, what = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await predicate();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, interval));
  }
}

module.exports = { once, many, until, DEFAULT_TIMEOUT };
