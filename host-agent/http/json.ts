import type { IncomingMessage, Server, ServerResponse } from "node:http";
import { ApiError } from "../errors.ts";

export function sendJson(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  const payload = `${JSON.stringify(body)}\n`;
  res.writeHead(status, {
    ...headers,
    "content-type": "application/json; charset=utf-8",
    "content-length": Buffer.byteLength(payload),
  });
  res.end(payload);
}

/** Every error body has this shape: a stable code and a sentence that says what is wrong and what is allowed. */
export function sendError(res: ServerResponse, err: ApiError, requestId?: string): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  // A request refused before its body was read (401, 404, 413...): close the connection after the
  // answer, so the client cannot keep streaming into the agent until the request timeout.
  const unread = res.req !== undefined && !res.req.complete;
  sendJson(
    res,
    err.status,
    { error: { code: err.code, message: err.message, ...(requestId ? { requestId } : {}) } },
    unread ? { ...err.headers, connection: "close" } : err.headers,
  );
}

/** Reads a whole request body, refusing (413) past `limit` bytes without reading the rest. */
export function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const declared = req.headers["content-length"];
  if (declared !== undefined && Number(declared) > limit) {
    return Promise.reject(
      new ApiError(
        413,
        "body_too_large",
        `the request body is ${declared} bytes; the limit is ${limit} bytes`,
      ),
    );
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let failed = false;
    req.on("data", (chunk: Buffer) => {
      if (failed) return;
      size += chunk.length;
      if (size > limit) {
        failed = true;
        reject(
          new ApiError(413, "body_too_large", `the request body is larger than the limit of ${limit} bytes`),
        );
        return;
      }
      chunks.push(chunk);
    });
    req.on("end", () => {
      if (!failed) resolve(Buffer.concat(chunks));
    });
    req.on("error", (err) => {
      if (!failed) reject(new ApiError(400, "bad_body", `could not read the request body: ${err.message}`));
    });
  });
}

/** Headers that describe one hop's connection, not the message: never forwarded. */
export const HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "proxy-authenticate",
  "proxy-authorization",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
  "expect",
  "content-length",
]);

/** Largest request header block either plane accepts (Node answers 431 past it). */
export const MAX_HEADER_BYTES = 16 * 1024;

export interface RequestTimeouts {
  /** The whole header block must arrive within this. */
  readonly headersTimeoutMs: number;
  /** The whole request, body included, must arrive within this. */
  readonly requestTimeoutMs: number;
}

/**
 * Drops clients that send their headers or body too slowly (408, then the connection is closed). Node
 * checks these only every connectionsCheckingInterval, so that is set from the timeouts too.
 */
export function applyRequestTimeouts(server: Server, t: RequestTimeouts): void {
  server.headersTimeout = t.headersTimeoutMs;
  server.requestTimeout = Math.max(t.requestTimeoutMs, t.headersTimeoutMs);
}

export function checkingInterval(t: RequestTimeouts): number {
  return Math.max(50, Math.min(1000, Math.floor(t.headersTimeoutMs / 4)));
}
