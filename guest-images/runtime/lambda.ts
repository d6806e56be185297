/**
 * API Gateway v2 (HTTP API, payload format 2.0) events and results for Lambda-style handlers, field by
 * field as AWS documents them. A function is mounted at /<function> the way an HTTP API stage is mapped
 * under a custom domain's path: the event's paths are those below the mount. Pure: no I/O.
 */
import { CONNECTION_HEADERS, SOURCE_IP_HEADER } from "../../contracts/guest-protocol.ts";

export interface IncomingCall {
  readonly method: string;
  /** The path as the client sent it (still percent-encoded), the function's prefix removed: "/" for its root. */
  readonly path: string;
  readonly rawQueryString: string;
  /** The headers as the runtime received them (IncomingMessage.rawHeaders: names as sent, repeats kept). */
  readonly rawHeaders: readonly string[];
  readonly body: Buffer;
  readonly requestId: string;
  /** The runtime's own peer: the source address only when the host names none (SOURCE_IP_HEADER). */
  readonly peerAddress: string;
  readonly functionName: string;
  readonly nowMs: number;
}

export interface HttpAnswer {
  readonly status: number;
  readonly headers: Record<string, string | string[]>;
  readonly body: Buffer;
}

/**
 * The bodies API Gateway passes as text; every other one, and one without a Content-Type, arrives
 * base64-encoded with isBase64Encoded true (application/x-www-form-urlencoded and multipart too). AWS
 * does not list them; this split is the one observed on HTTP APIs.
 */
const TEXT_TYPES = /^(text\/[^;\s]+|application\/(json|xml|javascript))\s*(;|$)/i;

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/** requestContext.time as AWS writes it: "12/Mar/2020:19:03:58 +0000" (UTC). */
export function requestTime(ms: number): string {
  const d = new Date(ms);
  const two = (n: number) => String(n).padStart(2, "0");
  return `${two(d.getUTCDate())}/${MONTHS[d.getUTCMonth()]}/${d.getUTCFullYear()}:${two(d.getUTCHours())}:${two(d.getUTCMinutes())}:${two(d.getUTCSeconds())} +0000`;
}

/** Percent-decodes what is valid UTF-8 and leaves the rest as sent (HTTP APIs hand handlers decoded paths). */
function decodePath(path: string): string {
  return path.replace(/(%[0-9a-f]{2})+/gi, (run) => {
    try {
      return decodeURIComponent(run);
    } catch {
      return run;
    }
  });
}

/**
 * The call's headers as the handler sees them: lower-case names, repeats joined with ",", without the
 * headers of the host's connection to the runtime or the host's own x-faas- ones.
 */
export function eventHeaders(rawHeaders: readonly string[]): {
  headers: Record<string, string>;
  sourceIp: string | undefined;
} {
  const joined = new Map<string, string[]>();
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!.toLowerCase();
    const values = joined.get(name);
    if (values) values.push(rawHeaders[i + 1]!);
    else joined.set(name, [rawHeaders[i + 1]!]);
  }
  const headers: Record<string, string> = {};
  for (const [name, values] of joined) {
    if (CONNECTION_HEADERS.includes(name) || name.startsWith("x-faas-")) continue;
    headers[name] = values.join(name === "cookie" ? "; " : ",");
  }
  return { headers, sourceIp: joined.get(SOURCE_IP_HEADER)?.[0] };
}

export function buildHttpEvent(call: IncomingCall): Record<string, unknown> {
  const { headers, sourceIp } = eventHeaders(call.rawHeaders);
  const contentType = headers["content-type"] ?? "";
  const isBase64Encoded = call.body.length > 0 && !TEXT_TYPES.test(contentType);
  const query = new URLSearchParams(call.rawQueryString);
  const queryStringParameters: Record<string, string> = {};
  for (const key of new Set(query.keys())) queryStringParameters[key] = query.getAll(key).join(",");
  // The Cookie header becomes the cookies array and leaves headers, as in payload 2.0.
  const cookies = (headers.cookie ?? "")
    .split(";")
    .map((c) => c.trim())
    .filter(Boolean);
  delete headers.cookie;
  const path = decodePath(call.path);
  const host = headers.host ?? "localhost";
  const event: Record<string, unknown> = {
    version: "2.0",
    routeKey: "$default",
    rawPath: path,
    rawQueryString: call.rawQueryString,
    ...(cookies.length > 0 ? { cookies } : {}),
    headers,
    ...(call.rawQueryString ? { queryStringParameters } : {}),
    requestContext: {
      accountId: "anonymous",
      apiId: call.functionName,
      domainName: host,
      domainPrefix: host.split(".")[0],
      http: {
        method: call.method,
        path,
        protocol: "HTTP/1.1",
        sourceIp: sourceIp ?? call.peerAddress,
        userAgent: headers["user-agent"] ?? "",
      },
      requestId: call.requestId,
      routeKey: "$default",
      stage: "$default",
      time: requestTime(call.nowMs),
      timeEpoch: call.nowMs,
    },
    isBase64Encoded,
  };
  if (call.body.length > 0) event.body = call.body.toString(isBase64Encoded ? "base64" : "utf8");
  return event;
}

/** What API Gateway answers when the handler failed or returned what it cannot map: never the error's text. */
export const INTERNAL_ERROR: HttpAnswer = {
  status: 500,
  headers: { "content-type": "application/json" },
  body: Buffer.from('{"message":"Internal Server Error"}'),
};

/** The line a failed invocation leaves in the function's logs, in the shape Lambda's Node runtime uses. */
export function invokeErrorLine(err: unknown): string {
  const e = err instanceof Error ? err : undefined;
  return `Invoke Error ${JSON.stringify({
    errorType: e?.name ?? typeof err,
    errorMessage: e ? e.message : String(err),
    ...(e?.stack ? { stack: e.stack.split("\n") } : {}),
  })}`;
}

/**
 * A root-relative Location or cookie Path from a function mounted at `mount` means the function's own
 * root: it is rewritten under the mount, so `Location: /new` from /shop lands on /shop/new.
 */
function underMount(mount: string, path: string): string {
  return path.startsWith("/") && !path.startsWith("//") ? `${mount}${path === "/" ? "" : path}` || "/" : path;
}

function cookieUnderMount(mount: string, cookie: string): string {
  return cookie.replace(
    /(;\s*path=)([^;]*)/i,
    (_, attr: string, path: string) => attr + underMount(mount, path.trim()),
  );
}

/**
 * Maps what a handler returned to an HTTP answer, the way API Gateway's payload 2.0 does: an object with
 * statusCode is a response (headers, multiValueHeaders, cookies as set-cookie, isBase64Encoded); any
 * other value is a 200 JSON answer with that value as its body. Throws TypeError for a statusCode AWS
 * refuses (the call then answers INTERNAL_ERROR). `mount` is the function's path prefix, like "/shop".
 */
export function resultToAnswer(result: unknown, mount = ""): HttpAnswer {
  if (typeof result !== "object" || result === null || !("statusCode" in result)) {
    const body =
      result === undefined || result === null
        ? Buffer.alloc(0)
        : Buffer.from(typeof result === "string" ? result : JSON.stringify(result));
    return { status: 200, headers: { "content-type": "application/json" }, body };
  }
  const r = result as Record<string, unknown>;
  const status = Number(r.statusCode);
  if (!Number.isInteger(status) || status < 100 || status > 599) {
    throw new TypeError(
      `handler returned statusCode ${String(r.statusCode)}: it must be an integer from 100 to 599`,
    );
  }
  const headers: Record<string, string | string[]> = {};
  const add = (name: string, value: unknown) => {
    const key = name.toLowerCase();
    const values = (Array.isArray(value) ? value : [value]).map(String);
    const had = headers[key];
    if (key === "set-cookie") headers[key] = [...(had === undefined ? [] : [had].flat()), ...values];
    else headers[key] = [...(had === undefined ? [] : [had].flat()), ...values].join(",");
  };
  if (typeof r.headers === "object" && r.headers !== null)
    for (const [k, v] of Object.entries(r.headers)) if (v !== undefined && v !== null) add(k, v);
  if (typeof r.multiValueHeaders === "object" && r.multiValueHeaders !== null)
    for (const [k, v] of Object.entries(r.multiValueHeaders)) if (Array.isArray(v)) add(k, v);
  if (Array.isArray(r.cookies)) for (const c of r.cookies) add("set-cookie", c);
  if (mount) {
    if (typeof headers.location === "string") headers.location = underMount(mount, headers.location);
    const cookies = headers["set-cookie"];
    if (Array.isArray(cookies)) headers["set-cookie"] = cookies.map((c) => cookieUnderMount(mount, c));
  }
  let body: Buffer;
  if (r.body === undefined || r.body === null) body = Buffer.alloc(0);
  else if (typeof r.body === "string")
    body = Buffer.from(r.body, r.isBase64Encoded === true ? "base64" : "utf8");
  else body = Buffer.from(JSON.stringify(r.body));
  return { status, headers, body };
}

/** Who the loaded function is, as a Lambda handler's context and AWS_LAMBDA_* variables name it. */
export interface FunctionIdentity {
  readonly functionName: string;
  readonly functionVersion: string;
  /** Unknown when the host did not say (an older host): memoryLimitInMB is then "". */
  readonly memoryMiB: number | undefined;
  readonly region: string | undefined;
  readonly logGroupName: string;
  readonly logStreamName: string;
}

/**
 * The `context` a Lambda handler gets: the fields AWS documents for Node.js, with an ARN in AWS's shape
 * (account 000000000000: there is no AWS account behind it) so code that parses it works.
 */
export function lambdaContext(
  id: FunctionIdentity,
  awsRequestId: string,
  remainingMs: () => number,
): Record<string, unknown> {
  return {
    functionName: id.functionName,
    functionVersion: id.functionVersion,
    invokedFunctionArn: `arn:aws:lambda:${id.region ?? "local"}:000000000000:function:${id.functionName}`,
    memoryLimitInMB: id.memoryMiB === undefined ? "" : String(id.memoryMiB),
    awsRequestId,
    logGroupName: id.logGroupName,
    logStreamName: id.logStreamName,
    identity: undefined,
    clientContext: undefined,
    callbackWaitsForEmptyEventLoop: false,
    getRemainingTimeInMillis: () => Math.max(0, Math.round(remainingMs())),
  };
}
