/** The CLI's client for the agent's two planes, with errors that carry the agent's own message. */
import { readFileSync } from "node:fs";
import path from "node:path";
import { request } from "undici";

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
  method: "GET" | "PUT" | "POST" | "DELETE",
  route: string,
  body?: { bytes: Buffer; type: string },
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
      headers: { authorization: `Bearer ${ep.token}`, ...(body ? { "content-type": body.type } : {}) },
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
