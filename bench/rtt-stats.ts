/**
 * Argument parsing and statistics of the round-trip benchmark (bench/rtt.ts), kept pure for unit tests.
 */
import { parseArgs } from "node:util";

export interface RttOptions {
  /** The platform's endpoint URL (stack output endpointUrl). */
  readonly endpoint: string;
  /** The benchmark Lambda's function URL (stack output benchmarkUrl), compared side by side. */
  readonly lambda?: string;
  /** Function to call on the platform: POST <endpoint>/<function>. */
  readonly functionName: string;
  /** Sequential calls measured after one warm-up call. */
  readonly warmCalls: number;
  /** Cold samples; each one waits idleSeconds first. */
  readonly coldCalls: number;
  /** Idle time before a cold call: longer than the pool's idle TTL (and Lambda's, ~5-15 min). */
  readonly idleSeconds: number;
}

export const USAGE =
  "usage: npm run bench:rtt -- --endpoint URL [--lambda URL] [--function NAME] [--warm N] [--cold N] [--idle-seconds S]";

function positiveInt(name: string, text: string | undefined, fallback: number, min: number): number {
  if (text === undefined) return fallback;
  const value = Number(text);
  if (!Number.isInteger(value) || value < min)
    throw new Error(`--${name} must be an integer >= ${min}, got "${text}"`);
  return value;
}

function httpUrl(name: string, text: string): string {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new Error(`--${name} must be an http(s) URL, got "${text}"`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new Error(`--${name} must be an http(s) URL, got "${text}"`);
  }
  return text.replace(/\/+$/, "");
}

export function parseRttArgs(argv: readonly string[]): RttOptions {
  const { values } = parseArgs({
    args: [...argv],
    strict: true,
    allowPositionals: false,
    options: {
      endpoint: { type: "string" },
      lambda: { type: "string" },
      function: { type: "string" },
      warm: { type: "string" },
      cold: { type: "string" },
      "idle-seconds": { type: "string" },
    },
  });
  if (values.endpoint === undefined) throw new Error(`--endpoint is required\n${USAGE}`);
  const functionName = values.function ?? "hello-world";
  if (!/^[a-z][a-z0-9-]{0,62}$/.test(functionName))
    throw new Error(`--function "${functionName}" is not a function name`);
  return {
    endpoint: httpUrl("endpoint", values.endpoint),
    ...(values.lambda === undefined ? {} : { lambda: httpUrl("lambda", values.lambda) }),
    functionName,
    warmCalls: positiveInt("warm", values.warm, 50, 1),
    coldCalls: positiveInt("cold", values.cold, 3, 0),
    idleSeconds: positiveInt("idle-seconds", values["idle-seconds"], 900, 0),
  };
}

/** Nearest-rank percentile (p in 0..100) of samples; NaN for none. */
export function percentile(samples: readonly number[], p: number): number {
  if (samples.length === 0) return Number.NaN;
  if (p < 0 || p > 100) throw new RangeError("percentile must be within 0..100");
  const sorted = [...samples].sort((a, b) => a - b);
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[rank - 1] as number;
}

export interface RttSummary {
  readonly count: number;
  readonly p50: number;
  readonly p99: number;
}

export function summarize(samples: readonly number[]): RttSummary {
  return { count: samples.length, p50: percentile(samples, 50), p99: percentile(samples, 99) };
}

export interface RttRow {
  readonly target: string;
  readonly cold: RttSummary;
  readonly warm: RttSummary;
}

function ms(value: number): string {
  return Number.isNaN(value) ? "-" : `${value.toFixed(1)} ms`;
}

/** The side-by-side table the benchmark prints. */
export function formatRttTable(rows: readonly RttRow[]): string {
  const header = ["target", "cold n", "cold p50", "cold p99", "warm n", "warm p50", "warm p99"];
  const lines = rows.map((r) => [
    r.target,
    String(r.cold.count),
    ms(r.cold.p50),
    ms(r.cold.p99),
    String(r.warm.count),
    ms(r.warm.p50),
    ms(r.warm.p99),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => (l[i] ?? "").length)));
  const render = (cells: readonly string[]) =>
    cells
      .map((c, i) => c.padEnd(widths[i] ?? 0))
      .join("  ")
      .trimEnd();
  return [render(header), ...lines.map(render)].join("\n");
}

/** The seed's hello-world call in the Genezio JSON-RPC shape; the Lambda handler answers it the same way. */
export const HELLO_WORLD_CALL = JSON.stringify({
  jsonrpc: "2.0",
  method: "HelloWorldService.helloWorld",
  params: [],
  id: 1,
});
