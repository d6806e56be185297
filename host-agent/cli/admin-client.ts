/** The CLI's client for the agent's two planes, with errors that carry the agent's own message. */

import { readFileSync } from "node:fs";
import path from "node:path";
import { request } from "undici";
import type { FunctionConfigPatch } from "../../contracts/function-config.ts";

export class CliError extends Error {
  override readonly name = "CliError";
}

export interface Endpoints {
  readonly dataUrl: string;
  readonly adminUrl: string;
  readonly token: string | undefined;
}

export function endpointsFromEnv(env: NodeJS.ProcessEnv): Endpoints {
  const stateDir = env.FAAS_STATE_DIR ?? ".faas";
  let token = env.FAAS_ADMIN_TOKEN;
  if (!token) {
    try {
      token = readFileSync(path.join(stateDir, "admin-token"), "utf8").trim();
    } catch {
      token = undefined;
    }
  }
  return {
    dataUrl: env.FAAS_URL ?? `http://127.0.0.1:${env.PORT ?? 8080}`,
    adminUrl: env.FAAS_ADMIN_URL ?? `http://127.0.0.1:${env.ADMIN_PORT ?? 8081}`,
    token,
  };
}

export async function adminRequest(
  ep: Endpoints,
  method: "GET" | "PUT" | "POST" | "PATCH" | "DELETE",
  route: string,
  body?: { bytes: Buffer; type: string; headers?: Record<string, string> },
): Promise<{ status: number; json: Record<string, unknown> }> {
  if (!ep.token) {
    throw new CliError(
      "no admin token: set FAAS_ADMIN_TOKEN, or run from the folder whose .faas/admin-token the agent wrote",
    );
  }
  let res: Awaited<ReturnType<typeof request>>;
  try {
    res = await request(`${ep.adminUrl}${route}`, {
      method,
      headers: {
        authorization: `Bearer ${ep.token}`,
        ...(body ? { "content-type": body.type, ...body.headers } : {}),
      },
      body: body?.bytes,
    });
  } catch (err) {
    throw new CliError(
      `cannot reach the agent's admin API at ${ep.adminUrl}: ${(err as Error).message} (is \`npm start\` running?)`,
    );
  }
  const text = await res.body.text();
  let json: Record<string, unknown> = {};
  try {
    json = JSON.parse(text) as Record<string, unknown>;
  } catch {
    json = { raw: text };
  }
  if (res.statusCode >= 400) {
    const err = json.error as { message?: string } | undefined;
    throw new CliError(`${method} ${route} failed (${res.statusCode}): ${err?.message ?? text}`);
  }
  return { status: res.statusCode, json };
}

/** What `--env`, `--secret`, `--memory` and `--timeout` ask for, as the agent's configuration change. */
export interface ConfigFlags {
  /** "NAME=value" each; "NAME=" sets an empty value. */
  readonly env?: readonly string[];
  readonly secrets?: readonly string[];
  /** MiB. */
  readonly memory?: string;
  /** Seconds, as Lambda counts its timeout. */
  readonly timeout?: string;
  /** Outbound network: true or "on" opens it, "off" closes it (deploy's --egress, config's --egress on|off). */
  readonly egress?: boolean | string;
  /** Calls one instance serves at once. */
  readonly concurrency?: string;
}

function pairs(flag: string, items: readonly string[] | undefined): Record<string, string> | undefined {
  if (!items || items.length === 0) return undefined;
  const out: Record<string, string> = {};
  for (const item of items) {
    const eq = item.indexOf("=");
    if (eq <= 0) throw new CliError(`${flag} takes NAME=value, not ${JSON.stringify(item)}`);
    out[item.slice(0, eq)] = item.slice(eq + 1);
  }
  return out;
}

/** The configuration change flags ask for (undefined: none); the agent checks names and bounds. */
export function configPatchOf(flags: ConfigFlags): FunctionConfigPatch | undefined {
  const patch: { -readonly [K in keyof FunctionConfigPatch]: FunctionConfigPatch[K] } = {};
  const env = pairs("--env", flags.env);
  if (env) patch.env = env;
  const secrets = pairs("--secret", flags.secrets);
  if (secrets) patch.secrets = secrets;
  if (flags.memory !== undefined) {
    if (!/^\d+$/.test(flags.memory))
      throw new CliError(`--memory takes MiB as a whole number, not ${flags.memory}`);
    patch.memoryMiB = Number(flags.memory);
  }
  if (flags.timeout !== undefined) {
    if (!/^\d+(\.\d+)?$/.test(flags.timeout))
      throw new CliError(`--timeout takes seconds, not ${flags.timeout}`);
    patch.timeoutMs = Math.round(Number(flags.timeout) * 1000);
  }
  if (flags.egress !== undefined && flags.egress !== false) {
    if (flags.egress !== true && flags.egress !== "on" && flags.egress !== "off")
      throw new CliError(`--egress takes on or off, not ${flags.egress}`);
    patch.egress = flags.egress !== "off";
  }
  if (flags.concurrency !== undefined) {
    if (!/^\d+$/.test(flags.concurrency))
      throw new CliError(`--concurrency takes a whole number of calls, not ${flags.concurrency}`);
    patch.concurrency = Number(flags.concurrency);
  }
  return Object.keys(patch).length > 0 ? patch : undefined;
}

/** The deploy header that carries a configuration change with the bundle (the agent's x-faas-config). */
export function deployConfigHeaders(patch: FunctionConfigPatch | undefined): Record<string, string> {
  return patch ? { "x-faas-config": Buffer.from(JSON.stringify(patch)).toString("base64") } : {};
}

/** Changes a deployed function's configuration without a new upload (PATCH /v1/functions/<name>/config). */
export async function updateConfig(ep: Endpoints, name: string, patch: FunctionConfigPatch) {
  const { json } = await adminRequest(ep, "PATCH", `/v1/functions/${encodeURIComponent(name)}/config`, {
    bytes: Buffer.from(JSON.stringify(patch)),
    type: "application/json",
  });
  return json as { function: { name: string; revision: number; config: Record<string, unknown> } };
}
