/**
 * Round-trip times of the platform and, optionally, the benchmark Lambda, from the operator's machine.
 * Cold = the first call after the function sat idle past its TTL; warm = calls right after another call.
 * Time is measured from sending the request to the response headers (first byte), as a client sees it.
 * Runs against real endpoints only: npm run bench:rtt -- --endpoint URL [--lambda URL]
 */
import { setTimeout as sleep } from "node:timers/promises";
import {
  formatRttTable,
  HELLO_WORLD_CALL,
  parseRttArgs,
  type RttRow,
  summarize,
  USAGE,
} from "./rtt-stats.ts";

interface Target {
  readonly label: string;
  readonly url: string;
}

async function timeCall(url: string): Promise<number> {
  const started = performance.now();
  const response = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: HELLO_WORLD_CALL,
  });
  const elapsed = performance.now() - started;
  const body = await response.text();
  if (!response.ok) throw new Error(`${url} answered ${response.status}: ${body.slice(0, 200)}`);
  return elapsed;
}

async function main(): Promise<void> {
  const options = parseRttArgs(process.argv.slice(2));
  const targets: Target[] = [{ label: "snapfaas", url: `${options.endpoint}/${options.functionName}` }];
  if (options.lambda) targets.push({ label: "aws-lambda", url: options.lambda });

  const cold = new Map<string, number[]>(targets.map((t) => [t.label, []]));
  for (let i = 0; i < options.coldCalls; i++) {
    console.error(`cold sample ${i + 1}/${options.coldCalls}: idling ${options.idleSeconds} s`);
    await sleep(options.idleSeconds * 1000);
    for (const target of targets) cold.get(target.label)?.push(await timeCall(target.url));
  }

  const warm = new Map<string, number[]>();
  for (const target of targets) {
    await timeCall(target.url);
    const samples: number[] = [];
    for (let i = 0; i < options.warmCalls; i++) samples.push(await timeCall(target.url));
    warm.set(target.label, samples);
  }

  const rows: RttRow[] = targets.map((t) => ({
    target: t.label,
    cold: summarize(cold.get(t.label) ?? []),
    warm: summarize(warm.get(t.label) ?? []),
  }));
  console.log(formatRttTable(rows));
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? error.message : error);
  console.error(USAGE);
  process.exitCode = 1;
});
