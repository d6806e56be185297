/** A closed-loop load generator on undici: `concurrency` callers, each sending its next call when the last returns. */
import { Pool } from "undici";
import { percentile } from "../rtt-stats.ts";

export interface LoadResult {
  readonly concurrency: number;
  readonly seconds: number;
  readonly requests: number;
  readonly errors: number;
  readonly rps: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
}

export async function runLoad(
  origin: string,
  path: string,
  body: string,
  concurrency: number,
  seconds: number,
): Promise<LoadResult> {
  const pool = new Pool(origin, { connections: concurrency, pipelining: 1, keepAliveTimeout: 60_000 });
  const latencies: number[] = [];
  let errors = 0;
  const end = performance.now() + seconds * 1000;
  const worker = async () => {
    while (performance.now() < end) {
      const t0 = performance.now();
      try {
        const res = await pool.request({
          method: "POST",
          path,
          body,
          headers: { "content-type": "application/json" },
        });
        await res.body.arrayBuffer();
        if (res.statusCode !== 200) errors++;
      } catch {
        errors++;
      }
      latencies.push(performance.now() - t0);
    }
  };
  const started = performance.now();
  await Promise.all(Array.from({ length: concurrency }, worker));
  const elapsed = (performance.now() - started) / 1000;
  await pool.close();
  return {
    concurrency,
    seconds: elapsed,
    requests: latencies.length,
    errors,
    rps: latencies.length / elapsed,
    p50Ms: percentile(latencies, 50),
    p99Ms: percentile(latencies, 99),
  };
}

/** One call, timed from sending the request to the first byte of the answer. */
export async function timeFirstByte(
  origin: string,
  path: string,
  body: string,
): Promise<{ ms: number; status: number }> {
  const { request } = await import("undici");
  const t0 = performance.now();
  const res = await request(`${origin}${path}`, {
    method: "POST",
    body,
    headers: { "content-type": "application/json" },
  });
  const ms = performance.now() - t0;
  await res.body.arrayBuffer();
  return { ms, status: res.statusCode };
}
