/** Starts a real agent (process sandbox) on free ports with a state dir of its own, and stops it. */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { Writable } from "node:stream";
import type { S3Client } from "@aws-sdk/client-s3";
import { request } from "undici";
import type { ProcessBase } from "../../contracts/process-base.ts";
import { bakeProcessBase } from "../../guest-images/process/bake.ts";
import { type RunningAgent, startAgent } from "../../host-agent/agent.ts";
import type { Clock } from "../../host-agent/clock.ts";
import { loadAgentConfig } from "../../host-agent/config.ts";
import { createLogger } from "../../host-agent/log.ts";
import type { BaseImage } from "../../host-agent/sandbox/driver.ts";

/** One base for the whole test run: baking is content-addressed, so sharing it is safe. */
const SHARED_BASE_DIR = path.join(tmpdir(), "faas-test-bases");
let sharedBase: Promise<ProcessBase> | undefined;
export function testBase(): Promise<ProcessBase> {
  sharedBase ??= bakeProcessBase(SHARED_BASE_DIR);
  return sharedBase;
}

const variants = new Map<string, Promise<ProcessBase>>();
/** Another base version (a runtime build stamped with `variant`), shared like testBase(). */
export function testBaseVariant(variant: string): Promise<ProcessBase> {
  let base = variants.get(variant);
  if (!base) {
    base = bakeProcessBase(SHARED_BASE_DIR, { runtimeVariant: variant });
    variants.set(variant, base);
  }
  return base;
}

export interface TestAgent extends RunningAgent {
  readonly stateDir: string;
  readonly logs: Array<Record<string, unknown>>;
  call(
    fn: string,
    body: unknown,
    init?: { method?: string; headers?: Record<string, string>; path?: string },
  ): Promise<{
    status: number;
    headers: Record<string, string | string[] | undefined>;
    text: string;
    // biome-ignore lint/suspicious/noExplicitAny: tests read whatever shape the call answered.
    json: () => any;
  }>;
  admin(
    method: string,
    route: string,
    body?: Buffer,
    headers?: Record<string, string>,
  ): Promise<{ status: number; json: Record<string, unknown>; headers: Record<string, unknown> }>;
  /** Stops the agent and removes its state dir (unless keepState). */
  close(keepState?: boolean): Promise<void>;
}

export async function startTestAgent(
  env: Record<string, string> = {},
  /** base: the shared test base unless given; null lets the agent choose (its release records, else a bake). */
  opts: { stateDir?: string; clock?: Clock; base?: BaseImage | null; s3Client?: S3Client } = {},
): Promise<TestAgent> {
  const stateDir = opts.stateDir ?? (await mkdtemp(path.join(tmpdir(), "faas-agent-")));
  const config = loadAgentConfig({
    PORT: "0",
    ADMIN_PORT: "0",
    FAAS_STATE_DIR: stateDir,
    FAAS_POOL_GENERIC: "1",
    FAAS_LOG_LEVEL: "debug",
    ...env,
  });
  const logs: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString("utf8").split("\n"))
        if (line) logs.push(JSON.parse(line) as Record<string, unknown>);
      cb();
    },
  });
  const base = opts.base === null ? undefined : (opts.base ?? (await testBase()));
  const agent = await startAgent(config, {
    ...(base ? { base } : {}),
    log: createLogger("debug", sink),
    clock: opts.clock,
    ...(opts.s3Client ? { s3Client: opts.s3Client } : {}),
  });
  const call: TestAgent["call"] = async (fn, body, init = {}) => {
    const res = await request(`${agent.dataUrl}${init.path ?? `/${fn}`}`, {
      method: (init.method ?? "POST") as "POST",
      headers: init.headers ?? { "content-type": "application/json" },
      body:
        body === undefined
          ? undefined
          : typeof body === "string" || Buffer.isBuffer(body)
            ? body
            : JSON.stringify(body),
    });
    const text = await res.body.text();
    return { status: res.statusCode, headers: res.headers, text, json: () => JSON.parse(text) };
  };
  const admin: TestAgent["admin"] = async (method, route, body, headers) => {
    const res = await request(`${agent.adminUrl}${route}`, {
      method: method as "GET",
      headers: {
        authorization: `Bearer ${agent.adminToken}`,
        "content-type": "application/gzip",
        ...headers,
      },
      body,
    });
    const text = await res.body.text();
    let json: Record<string, unknown> = {};
    try {
      json = JSON.parse(text) as Record<string, unknown>;
    } catch {
      json = { text };
    }
    return { status: res.statusCode, json, headers: res.headers };
  };
  return Object.assign(Object.create(null), agent, {
    stateDir,
    logs,
    call,
    admin,
    stop: agent.stop,
    async close(keepState = false) {
      await agent.stop();
      if (!keepState) await rm(stateDir, { recursive: true, force: true });
    },
  }) as TestAgent;
}

/**
 * Waits until no instance of any pool is starting. Stopping an agent while an instance start completes
 * can leave that jail's inner bwrap behind (the process driver kills only the top process), so tests
 * that start instances in the background (rolls, refills) stop their agent once starts are done.
 */
export async function untilNoStarts(agent: TestAgent, timeoutMs = 15_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    const res = await agent.admin("GET", "/v1/pool");
    const pools = (res.json.pools as Array<{ instances: { starting: number } }> | undefined) ?? [
      res.json as { instances: { starting: number } },
    ];
    if (pools.every((p) => p.instances.starting === 0)) return;
    await new Promise((r) => setTimeout(r, 50));
  }
}

export const HELLO_CALL = { jsonrpc: "2.0", method: "HelloWorldService.helloWorld", params: [], id: 1 };
