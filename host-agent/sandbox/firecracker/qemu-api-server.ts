/**
 * Serves the adapter's Firecracker API subset on the jail's API socket: routes a request, refuses
 * paths and bodies Firecracker would refuse (400 with `fault_message`), and hands valid calls to
 * the adapter. The body check is the adapter's own strict schemas; tests add the official spec.
 */
import { rm } from "node:fs/promises";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { Socket } from "node:net";
import { matchAdapterRoute, validateAdapterBody } from "./qemu-api-schemas.ts";
import type { AdapterAnswer } from "./qemu-vmm.ts";

export type AdapterHandler = (
  route: string,
  id: string | undefined,
  body: Record<string, unknown>,
) => Promise<AdapterAnswer>;

/** An extra body check (e.g. the official spec); returns what is wrong, or null. */
export type BodyValidator = (method: string, path: string, body: unknown) => string | null;

export interface RecordedApiCall {
  readonly method: string;
  readonly path: string;
  readonly body: unknown;
  readonly status: number;
  readonly fault?: string;
}

/** Largest request body accepted; Firecracker's bodies are a few hundred bytes. */
const MAX_BODY = 64 * 1024;

export class AdapterApiServer {
  readonly calls: RecordedApiCall[] = [];
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();
  /** One request at a time, like Firecracker's single API thread: QMP sequences never interleave. */
  private queue: Promise<void> = Promise.resolve();
  private closed = false;

  private constructor(
    private readonly socketPath: string,
    private readonly handler: AdapterHandler,
    private readonly onFatalAnswer: (fault: string) => void,
    private readonly extraValidator?: BodyValidator,
  ) {
    this.server = createServer((req, res) => {
      const next = this.queue.then(() => this.serve(req, res));
      this.queue = next.catch(() => undefined);
    });
    this.server.on("connection", (socket) => {
      this.sockets.add(socket);
      socket.on("close", () => this.sockets.delete(socket));
    });
  }

  static async listen(options: {
    socketPath: string;
    handler: AdapterHandler;
    /** Called after a 400 that ends the VMM (a failed load or start). */
    onFatalAnswer: (fault: string) => void;
    extraValidator?: BodyValidator;
  }): Promise<AdapterApiServer> {
    await rm(options.socketPath, { force: true });
    const api = new AdapterApiServer(
      options.socketPath,
      options.handler,
      options.onFatalAnswer,
      options.extraValidator,
    );
    await new Promise<void>((resolve, reject) => {
      api.server.once("error", reject);
      api.server.listen(options.socketPath, () => resolve());
    });
    return api;
  }

  /** Stops serving for good and removes the socket (the VMM is gone). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      for (const socket of this.sockets) socket.destroy();
    });
    await rm(this.socketPath, { force: true });
  }

  private async serve(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const method = req.method ?? "GET";
    const path = req.url ?? "/";
    let body: unknown;
    try {
      body = await readJsonBody(req);
    } catch (err) {
      return this.answer(res, method, path, undefined, { status: 400, fault: (err as Error).message });
    }
    const match = matchAdapterRoute(method, path);
    if (!match) {
      return this.answer(res, method, path, body, {
        status: 400,
        fault: `Invalid request method and/or path: ${method} ${path}.`,
      });
    }
    const invalid =
      validateAdapterBody(match.route, body) ?? this.extraValidator?.(method, path, body) ?? null;
    if (invalid) {
      return this.answer(res, method, path, body, {
        status: 400,
        fault: `An error occurred when deserializing the json body of a request: ${invalid}`,
      });
    }
    let answer: AdapterAnswer;
    try {
      answer = await this.handler(match.route, match.id, (body ?? {}) as Record<string, unknown>);
    } catch (err) {
      answer = { status: 400, fault: `Internal error: ${(err as Error).message}` };
    }
    this.answer(res, method, path, body, answer);
    if (answer.status === 400 && answer.exitAfter) this.onFatalAnswer(answer.fault);
  }

  private answer(
    res: ServerResponse,
    method: string,
    path: string,
    body: unknown,
    answer: AdapterAnswer,
  ): void {
    this.calls.push({
      method,
      path,
      body,
      status: answer.status,
      ...(answer.status === 400 ? { fault: answer.fault } : {}),
    });
    if (answer.status === 204) {
      res.writeHead(204);
      res.end();
    } else {
      res.writeHead(answer.status, { "content-type": "application/json" });
      res.end(JSON.stringify(answer.status === 200 ? answer.json : { fault_message: answer.fault }));
    }
  }
}

async function readJsonBody(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY) throw new Error(`The request body is larger than ${MAX_BODY} bytes.`);
    chunks.push(chunk as Buffer);
  }
  if (chunks.length === 0) return undefined;
  try {
    return JSON.parse(Buffer.concat(chunks).toString("utf8"));
  } catch {
    throw new Error("The request body is not valid JSON.");
  }
}
