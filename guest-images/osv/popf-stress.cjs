// Stress check for lost timer interrupts under V8's JIT (see README "popf and the interrupt flag").
// The main thread runs JIT-heavy code without pause while (a) a chain of 10 ms timers and (b) a worker
// thread that ticks every 5 ms need timer interrupts to run at all. If JIT code leaves interrupts
// disabled (popf restoring IF=0 in OSv's ring 0), the timers fire far too late, the worker's
// heartbeat stalls, or the whole guest hangs (the host watchdog in check-popf.sh catches that).
// Prints one line "POPF-CHECK PASS ..." or "POPF-CHECK FAIL ..." and exits 0 or 1.
// Usage: node stress.cjs [--seconds N] [--max-late-ms M]
"use strict";
const { Worker, isMainThread, workerData } = require("node:worker_threads");

function option(name, fallback) {
  const at = process.argv.indexOf(name);
  const value = at === -1 ? Number.NaN : Number(process.argv[at + 1]);
  return Number.isFinite(value) ? value : fallback;
}

function nowMs() {
  return Number(process.hrtime.bigint()) / 1e6;
}

// Deliberately varied work: shape-polymorphic access, closures, sorting with a comparator, exceptions
// (deopts), typed arrays, BigInt, JSON, and fresh functions so the compiler keeps emitting new code.
let generation = 0;
function jitWork(round) {
  const shapes = [{ a: 1 }, { b: 2, a: 3 }, { c: 4, b: 5, a: 6 }, { a: 7, d: 8 }];
  let sum = 0;
  for (let i = 0; i < 2000; i++) {
    const o = shapes[i & 3];
    sum += o.a + (o.b ?? 0);
    try {
      if ((i + round) % 397 === 0) throw new Error(String(i));
    } catch (e) {
      sum += e.message.length;
    }
  }
  const arr = Array.from({ length: 300 }, (_, i) => (i * 7919 + round) % 1009);
  arr.sort((x, y) => x - y);
  const f64 = new Float64Array(256);
  for (let i = 0; i < f64.length; i++) f64[i] = Math.sqrt(i + round) * Math.sin(i);
  let big = 1n;
  for (let i = 1n; i < 40n; i++) big = (big * i) % 1000000007n;
  const json = JSON.parse(JSON.stringify({ round, arr: arr.slice(0, 20), big: String(big) }));
  generation += 1;
  const fresh = new Function("x", `return x * ${generation % 97} + ${round % 13};`);
  for (let i = 0; i < 500; i++) sum += fresh(i);
  return sum + json.arr.length + f64[10];
}

function main() {
  const seconds = option("--seconds", 60);
  const maxLateMs = option("--max-late-ms", 500);
  const beats = new Int32Array(new SharedArrayBuffer(4));
  const worker = new Worker(__filename, { workerData: beats.buffer });
  const start = nowMs();
  const deadline = start + seconds * 1000;
  let timers = 0;
  let maxLate = 0;
  let lastBeat = 0;
  let lastBeatAt = start;
  let maxBeatGap = 0;
  let done = false;
  let checksum = 0;

  function finish(ok, detail) {
    if (done) return;
    done = true;
    const summary = `timers=${timers} maxLateMs=${maxLate.toFixed(1)} maxHeartbeatGapMs=${maxBeatGap.toFixed(1)} checksum=${Math.round(checksum) % 1000}`;
    console.log(`POPF-CHECK ${ok ? "PASS" : "FAIL"} ${detail ? `${detail} ` : ""}${summary}`);
    worker.terminate().finally(() => process.exit(ok ? 0 : 1));
  }

  function armTimer() {
    const due = nowMs() + 10;
    setTimeout(() => {
      const late = nowMs() - due;
      timers += 1;
      if (late > maxLate) maxLate = late;
      if (late > maxLateMs)
        return finish(false, `timer fired ${late.toFixed(1)} ms late (limit ${maxLateMs})`);
      if (!done) armTimer();
    }, 10);
  }

  let round = 0;
  function spin() {
    if (done) return;
    const chunkEnd = nowMs() + 5;
    while (nowMs() < chunkEnd) checksum = (checksum + jitWork(round++)) % 1e9;
    const t = nowMs();
    const beat = Atomics.load(beats, 0);
    if (beat !== lastBeat) {
      lastBeat = beat;
      lastBeatAt = t;
    } else if (lastBeat > 0 && t - lastBeatAt > maxBeatGap) {
      // Measured from the first beat on: starting the worker thread takes a while.
      maxBeatGap = t - lastBeatAt;
      if (maxBeatGap > maxLateMs)
        return finish(false, `worker heartbeat stalled ${maxBeatGap.toFixed(1)} ms`);
    }
    if (t >= deadline) {
      const ok = timers > 0 && lastBeat > 0;
      return finish(ok, ok ? "" : timers > 0 ? "the worker never ticked" : "no timer ever fired");
    }
    setImmediate(spin);
  }

  armTimer();
  spin();
}

if (isMainThread) {
  main();
} else {
  const beats = new Int32Array(workerData);
  setInterval(() => Atomics.add(beats, 0, 1), 5);
}
