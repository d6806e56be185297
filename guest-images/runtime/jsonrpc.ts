/** JSON-RPC 2.0 over the classes a Genezio-style module exports. Pure: no I/O. */

export const PARSE_ERROR = -32700;
export const INVALID_REQUEST = -32600;
export const METHOD_NOT_FOUND = -32601;
export const SERVER_ERROR = -32000;
/** A method's answer that JSON cannot carry (a BigInt, a circular object). */
export const INTERNAL_ERROR = -32603;

export type JsonRpcId = string | number | null;

export interface JsonRpcAnswer {
  /** HTTP status the answer travels with. */
  readonly status: number;
  readonly body: Record<string, unknown>;
}

export interface RpcCall {
  readonly className: string;
  readonly methodName: string;
  readonly params: unknown[];
  readonly id: JsonRpcId;
}

// biome-ignore lint/suspicious/noExplicitAny: user classes are arbitrary.
export type AnyClass = new (...args: any[]) => any;

export function isClass(value: unknown): value is AnyClass {
  return typeof value === "function" && /^class[\s{]/.test(Function.prototype.toString.call(value));
}

/** The exported classes of a module, by export name and by class name. */
export function exportedClasses(moduleExports: Record<string, unknown>): Map<string, AnyClass> {
  const classes = new Map<string, AnyClass>();
  for (const [exportName, value] of Object.entries(moduleExports)) {
    if (!isClass(value)) continue;
    if (exportName !== "default") classes.set(exportName, value);
    if (value.name && !classes.has(value.name)) classes.set(value.name, value);
  }
  return classes;
}

export function rpcError(
  status: number,
  code: number,
  message: string,
  id: JsonRpcId,
  info?: unknown,
): JsonRpcAnswer {
  const error: Record<string, unknown> = { code, message };
  if (info !== undefined) error.info = info;
  return { status, body: { jsonrpc: "2.0", error, id } };
}

/**
 * What the call's first argument is given when the client sent a GnzContext there. Genezio's runtime
 * (genezio CLI 3.x, src/bundlers/node/genezioRuntimeHandlerGenerator.ts) fills a first parameter whose
 * `isGnzContext` is true with `requestContext` ({ http, url }) and the request's `headers`; its
 * generated client sends `{ token, isGnzContext: true }` there for methods that declare a GnzContext.
 */
export interface RpcRequestInfo {
  readonly headers: Record<string, string>;
  readonly http: {
    readonly method: string;
    readonly path: string;
    readonly protocol: string;
    readonly userAgent: string;
    readonly sourceIp: string;
  };
  readonly url: URL;
}

function fillGnzContext(params: unknown[], request: RpcRequestInfo | undefined): void {
  const first = params[0];
  if (!request || typeof first !== "object" || first === null || Array.isArray(first)) return;
  const ctx = first as Record<string, unknown>;
  if (ctx.isGnzContext !== true) return;
  ctx.requestContext = { http: { ...request.http }, url: request.url };
  ctx.headers = { ...request.headers };
}

/**
 * A thrown value as Genezio's client reads it back (its Remote turns `error` into an Error with
 * `code` and `info`): a GenezioError's integer code and its info, else -32000 with the message.
 */
export function thrownToAnswer(err: unknown, id: JsonRpcId): JsonRpcAnswer {
  if (!(err instanceof Error)) return rpcError(500, SERVER_ERROR, String(err), id);
  const { code, info } = err as Error & { code?: unknown; info?: unknown };
  return rpcError(500, Number.isInteger(code) ? (code as number) : SERVER_ERROR, err.message, id, info);
}

/**
 * The answer as the bytes sent. A result (or an error's info) JSON cannot carry, a BigInt or a circular
 * object, becomes an internal error naming why: the call is answered and the instance goes on serving.
 */
export function serializeAnswer(answer: JsonRpcAnswer): { status: number; text: string } {
  try {
    return { status: answer.status, text: JSON.stringify(answer.body) };
  } catch (err) {
    const id = (answer.body.id ?? null) as JsonRpcId;
    const what = "error" in answer.body && answer.body.error ? "error's info" : "result";
    const fallback = rpcError(
      500,
      INTERNAL_ERROR,
      `the method's ${what} cannot be sent as JSON: ${(err as Error).message}`,
      id,
    );
    return { status: fallback.status, text: JSON.stringify(fallback.body) };
  }
}

export function rpcResult(result: unknown, id: JsonRpcId): JsonRpcAnswer {
  return {
    status: 200,
    body: { jsonrpc: "2.0", result: result === undefined ? null : result, error: null, id },
  };
}

/** One decoder for every call (a decode without `stream` keeps no state); made on first use, after the snapshot. */
let strictUtf8: InstanceType<typeof TextDecoder> | undefined;

/**
 * Decodes a request body as strict UTF-8 and parses it: bytes that are not UTF-8 are a parse error, not
 * silently replaced by U+FFFD (which would hand the method arguments the caller never sent).
 */
export function parseRpcBody(body: Uint8Array): RpcCall | JsonRpcAnswer {
  let text: string;
  try {
    strictUtf8 ??= new TextDecoder("utf-8", { fatal: true });
    text = strictUtf8.decode(body);
  } catch {
    return rpcError(400, PARSE_ERROR, "Parse error: the body is not valid UTF-8", null);
  }
  return parseRpcRequest(text);
}

/** Parses and checks one JSON-RPC request body: an RpcCall, or the error answer to send. */
export function parseRpcRequest(raw: string): RpcCall | JsonRpcAnswer {
  let message: unknown;
  try {
    message = JSON.parse(raw);
  } catch (err) {
    return rpcError(
      400,
      PARSE_ERROR,
      `Parse error: the body is not valid JSON (${(err as Error).message})`,
      null,
    );
  }
  if (typeof message !== "object" || message === null || Array.isArray(message)) {
    return rpcError(400, INVALID_REQUEST, "Invalid request: expected one JSON-RPC 2.0 request object", null);
  }
  const m = message as Record<string, unknown>;
  const id = typeof m.id === "string" || typeof m.id === "number" ? m.id : null;
  if (m.jsonrpc !== "2.0")
    return rpcError(400, INVALID_REQUEST, 'Invalid request: "jsonrpc" must be "2.0"', id);
  if (!("id" in m) || (m.id !== null && typeof m.id !== "string" && typeof m.id !== "number")) {
    return rpcError(400, INVALID_REQUEST, 'Invalid request: "id" must be a number, a string or null', null);
  }
  if (typeof m.method !== "string" || !/^[A-Za-z_$][\w$]*\.[A-Za-z_$][\w$]*$/.test(m.method)) {
    return rpcError(400, INVALID_REQUEST, 'Invalid request: "method" must be "Class.method"', id);
  }
  if (m.params !== undefined && !Array.isArray(m.params)) {
    return rpcError(
      400,
      INVALID_REQUEST,
      'Invalid request: "params" must be an array of positional arguments',
      id,
    );
  }
  const [className, methodName] = m.method.split(".") as [string, string];
  return { className, methodName, params: (m.params as unknown[] | undefined) ?? [], id };
}

export function isAnswer(v: RpcCall | JsonRpcAnswer): v is JsonRpcAnswer {
  return "status" in v;
}

/**
 * Runs one call against lazily created class instances (one per class, kept for the instance's life, as
 * a warm Lambda keeps its module state). User throws become errors carrying the message (and a
 * GenezioError's code and info); `request` fills a GnzContext first argument.
 */
export async function dispatchRpc(
  call: RpcCall,
  classes: Map<string, AnyClass>,
  instances: Map<string, unknown>,
  request?: RpcRequestInfo,
): Promise<JsonRpcAnswer> {
  const cls = classes.get(call.className);
  if (!cls) {
    const known = [...new Set([...classes.values()].map((c) => c.name))].join(", ") || "none";
    return rpcError(
      404,
      METHOD_NOT_FOUND,
      `Method not found: no class "${call.className}" (exported: ${known})`,
      call.id,
    );
  }
  const isPublic = call.methodName !== "constructor" && !call.methodName.startsWith("_");
  const method = isPublic ? (cls.prototype as Record<string, unknown>)[call.methodName] : undefined;
  if (typeof method !== "function") {
    return rpcError(404, METHOD_NOT_FOUND, `Method not found: ${call.className}.${call.methodName}`, call.id);
  }
  try {
    let target = instances.get(call.className);
    if (target === undefined) {
      target = new cls();
      instances.set(call.className, target);
    }
    fillGnzContext(call.params, request);
    const result = await (method as (...a: unknown[]) => unknown).apply(target, call.params);
    return rpcResult(result, call.id);
  } catch (err) {
    return thrownToAnswer(err, call.id);
  }
}
