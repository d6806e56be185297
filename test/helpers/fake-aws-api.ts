/**
 * A local stand-in for the two AWS APIs the host agent calls, spoken the way the SDK v3 clients speak
 * them: CloudWatch over the AWS JSON 1.0 protocol (POST, `x-amz-target:
 * GraniteServiceVersion20100801.<Action>`, JSON body, gzip when large) and Auto Scaling over the AWS
 * query protocol (POST, form-encoded `Action=...&Version=2011-01-01&...`, XML answers). Real SDK
 * clients are pointed at it with `endpoint`; every request is decoded and recorded, and chosen actions
 * can be made to fail with a given status and error code.
 */
import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { gunzipSync } from "node:zlib";

export const TEST_CREDENTIALS = {
  accessKeyId: "AKIDFAKEFLEETTEST",
  secretAccessKey: "fake-secret-for-tests",
};
export const TEST_REGION = "eu-west-1";

export interface ApiCall {
  readonly protocol: "json" | "query";
  readonly action: string;
  /** JSON body (json protocol) or the form's fields (query protocol). */
  readonly params: Record<string, unknown>;
  readonly headers: IncomingMessage["headers"];
}

interface Failure {
  readonly status: number;
  readonly code: string;
  readonly message: string;
}

export class FakeAwsApi {
  readonly calls: ApiCall[] = [];
  private readonly failures = new Map<string, Failure[]>();
  private server: Server | undefined;
  endpoint = "";

  async start(): Promise<this> {
    this.server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        let body = Buffer.concat(chunks);
        if (req.headers["content-encoding"] === "gzip") body = gunzipSync(body);
        const target = req.headers["x-amz-target"];
        const call: ApiCall =
          typeof target === "string"
            ? {
                protocol: "json",
                action: target.split(".").pop() ?? "",
                params: JSON.parse(body.toString("utf8") || "{}") as Record<string, unknown>,
                headers: req.headers,
              }
            : (() => {
                const form = new URLSearchParams(body.toString("utf8"));
                return {
                  protocol: "query" as const,
                  action: form.get("Action") ?? "",
                  params: Object.fromEntries(form.entries()),
                  headers: req.headers,
                };
              })();
        this.calls.push(call);
        const failure = this.failures.get(call.action)?.shift();
        if (call.protocol === "json") {
          res.writeHead(failure?.status ?? 200, {
            "content-type": "application/x-amz-json-1.0",
            "x-amzn-requestid": `req-${this.calls.length}`,
            ...(failure ? { "x-amzn-query-error": `${failure.code};Sender` } : {}),
          });
          res.end(
            JSON.stringify(
              failure ? { __type: `com.amazonaws.cloudwatch#${failure.code}`, message: failure.message } : {},
            ),
          );
          return;
        }
        res.writeHead(failure?.status ?? 200, { "content-type": "text/xml" });
        res.end(
          failure
            ? `<ErrorResponse><Error><Type>Sender</Type><Code>${failure.code}</Code><Message>${failure.message}</Message></Error><RequestId>req-${this.calls.length}</RequestId></ErrorResponse>`
            : `<${call.action}Response xmlns="http://autoscaling.amazonaws.com/doc/2011-01-01/"><${call.action}Result/><ResponseMetadata><RequestId>req-${this.calls.length}</RequestId></ResponseMetadata></${call.action}Response>`,
        );
      });
    });
    await new Promise<void>((resolve) => this.server!.listen(0, "127.0.0.1", resolve));
    this.endpoint = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  /** The next `times` calls of `action` fail with this status and error code. */
  fail(action: string, failure: Failure, times = 1): void {
    const queue = this.failures.get(action) ?? [];
    for (let i = 0; i < times; i++) queue.push(failure);
    this.failures.set(action, queue);
  }

  of(action: string): ApiCall[] {
    return this.calls.filter((c) => c.action === action);
  }

  async close(): Promise<void> {
    const server = this.server;
    if (!server) return;
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  }
}
