/**
 * CORS for a function's calls: the browser's preflight (OPTIONS with Access-Control-Request-Method) never
 * reaches the function's code, and every answer to an allowed origin says so. Two sides answer a call
 * and must agree: the guest runtime (from the configuration its load carried) and the agent, for the
 * answers it makes itself (a crashed or timed-out call's 502/504), so a browser can read those too.
 * Pure: no I/O.
 */
import type { CorsConfig } from "./function-config.ts";

/** How long a browser may keep a preflight's answer, seconds. */
const PREFLIGHT_MAX_AGE_S = 600;

/**
 * The CORS a function gets when its configuration names none: Genezio's runtime answers every origin
 * (Access-Control-Allow-Origin: *) for its classes, so JSON-RPC classes do too; a handler's CORS is its
 * own (express's cors() and the like) unless configured.
 */
export const GENEZIO_DEFAULT_CORS: CorsConfig = { allowOrigins: ["*"] };

export interface CorsDecision {
  /** True for a preflight: answer it with `headers` and status 204, without calling the function. */
  readonly preflight: boolean;
  /** Headers to put on the answer (empty when the origin is not allowed or no origin was sent). */
  readonly headers: Record<string, string>;
}

export function corsFor(
  policy: CorsConfig | undefined,
  method: string,
  headers: Readonly<Record<string, string | string[] | undefined>>,
): CorsDecision {
  const one = (name: string) => {
    const v = headers[name];
    return Array.isArray(v) ? v.join(",") : v;
  };
  const origin = one("origin");
  const requestedMethod = one("access-control-request-method");
  const preflight = policy !== undefined && method === "OPTIONS" && origin !== undefined && !!requestedMethod;
  if (!policy) return { preflight: false, headers: {} };
  const out: Record<string, string> = {};
  const any = policy.allowOrigins.includes("*");
  if (any) out["access-control-allow-origin"] = "*";
  else {
    // The answer depends on the Origin header: caches must keep one copy per origin.
    out.vary = "origin";
    if (origin !== undefined && policy.allowOrigins.includes(origin)) {
      out["access-control-allow-origin"] = origin;
    }
  }
  if (preflight && out["access-control-allow-origin"]) {
    out["access-control-allow-methods"] = requestedMethod!;
    const requestedHeaders = one("access-control-request-headers");
    if (requestedHeaders) out["access-control-allow-headers"] = requestedHeaders;
    out["access-control-max-age"] = String(PREFLIGHT_MAX_AGE_S);
  }
  return { preflight, headers: out };
}
