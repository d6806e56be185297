/**
 * The host <-> guest runtime contract, shared by the agent and the runtime. Everything under /_faas/ is
 * the host's; every other path is a call to the loaded function, forwarded as the client sent it. The
 * host carries these requests in frames (guest-channel.ts); any other client reaches them over HTTP.
 */

import type { CorsConfig } from "./function-config.ts";

export const CONTROL_PREFIX = "/_faas/";

/** Headers the host adds to every forwarded call. */
export const REQUEST_ID_HEADER = "x-faas-request-id";
/** Milliseconds the call may still take (a relative budget: a restored guest's clock cannot be trusted). */
export const TIMEOUT_HEADER = "x-faas-timeout-ms";
/**
 * The client's address as the host resolved it: its peer, or the client a proxy the host trusts named
 * (FAAS_TRUSTED_PROXIES). Handlers see it as requestContext.http.sourceIp; the host drops any x-faas-
 * header a client sends, so a caller cannot claim an address with it.
 */
export const SOURCE_IP_HEADER = "x-faas-source-ip";
/**
 * Headers of one connection, not of the message (RFC 9110 section 7.6.1): the host never forwards a
 * client's, and the runtime hides those of the host's own connection from the function.
 */
export const CONNECTION_HEADERS: readonly string[] = [
  "connection",
  "keep-alive",
  "proxy-connection",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
];
/** Set by the runtime on every answer: the base version and runtime build that served it. */
export const BASE_VERSION_HEADER = "x-faas-base-version";
/**
 * The base version a runtime names when it was not told one (`--base-version`): a microVM rootfs is
 * built before the base version that hashes it exists, so the host that restored it names the version.
 * (guest-images/runtime/main.ts spells it out: importing it there would change every rootfs key.)
 */
export const UNVERSIONED_BASE = "unversioned";

/** POST /_faas/init: what a fresh (restored or started) instance must learn before it serves. */
export interface InitRequest {
  readonly instanceId: string;
  /** The host's wall clock; the guest's may be stale after a snapshot restore. */
  readonly unixTimeMs: number;
  /**
   * 32 random bytes, base64: every clone of one snapshot starts with the same random state, so the
   * runtime reseeds user space from these (OpenSSL's DRBG, Math.random, node's UUID and randomInt caches).
   */
  readonly entropy: string;
  /**
   * The instance's control secret (at least 32 characters), known only to the host that started it. The
   * first init sets it; every later control call (all of /_faas/ but health) must carry it in
   * CONTROL_SECRET_HEADER. A runtime started with --require-control-secret refuses an init without one.
   */
  readonly controlSecret?: string;
}

/** Header carrying the instance's control secret on /_faas/ calls after the first init. */
export const CONTROL_SECRET_HEADER = "x-faas-control-secret";
/** Shortest control secret the runtime accepts (the host sends 32 random bytes, base64url: 43). */
export const CONTROL_SECRET_MIN_LENGTH = 32;
/** Bytes of entropy /_faas/init must carry. */
export const INIT_ENTROPY_BYTES = 32;

/** POST /_faas/load: import the function's code from the read-only code path. */
export interface LoadRequest extends LoadSettings {
  readonly functionName: string;
  /** Entry module relative to the code path. */
  readonly entry: string;
}

/**
 * What a load carries besides the code: the function's configuration, as data in the body (never on a
 * command line, where /proc shows it). Every field is optional: a runtime given none serves as before.
 */
export interface LoadSettings {
  /**
   * The function's own variables and secrets, set in process.env before its module is imported. The
   * runtime adds the AWS_LAMBDA_* ones from the fields below (the host has checked the names).
   */
  readonly env?: Readonly<Record<string, string>>;
  /** What AWS_LAMBDA_FUNCTION_VERSION and context.functionVersion say (the record's revision). */
  readonly functionVersion?: string;
  /** The instance's memory, MiB: AWS_LAMBDA_FUNCTION_MEMORY_SIZE and context.memoryLimitInMB. */
  readonly memoryMiB?: number;
  /** The host's region, when it has one: AWS_REGION, AWS_DEFAULT_REGION and the ARN in the context. */
  readonly region?: string;
  /** Browser origins allowed to call; the runtime answers preflights and sets the CORS headers. */
  readonly cors?: CorsConfig;
}

export interface LoadResponse {
  readonly functionName: string;
  /** "jsonrpc" for modules exporting classes, "handler" for Lambda-style `handler(event, context)`. */
  readonly style: "jsonrpc" | "handler";
  /** Time spent importing the module, ms. */
  readonly initMs: number;
  readonly classes: string[];
}

/** GET /_faas/health */
export interface HealthResponse {
  readonly status: "ok";
  readonly baseVersion: string;
  readonly runtimeBuild: string;
  readonly instanceId: string | null;
  readonly functionName: string | null;
  readonly pid: number;
}

/** Error body of every /_faas/ route. */
export interface ControlError {
  readonly error: { readonly kind: "load" | "protocol" | "state"; readonly message: string };
}

/** One line of the runtime's stdout: the user's console output, tagged per call. */
export interface GuestLogLine {
  readonly type: "log" | "fatal" | "ready";
  readonly fn: string | null;
  readonly rid: string | null;
  readonly level: "debug" | "info" | "warn" | "error";
  readonly msg: string;
}

/**
 * Set on an HTTP answer by a runtime that keeps its console for the host (`--console channel`): how many
 * lines wait at GET /_faas/console. On the framed channel (guest-channel.ts) the lines come to the host
 * in console batches instead, and no answer carries this header.
 */
export const CONSOLE_PENDING_HEADER = "x-faas-console";

/** GET /_faas/console: the lines kept since the last read (then forgotten), and how many were dropped. */
export interface ConsoleResponse {
  readonly lines: GuestLogLine[];
  readonly dropped: number;
}
