/**
 * A local stand-in for the EC2 instance metadata service that enforces IMDSv2 the way the fleet's
 * launch template does (tokens required): PUT /latest/api/token with a TTL header from 1 to 21600, then
 * GETs carrying that token. Tokens can be revoked, items changed, and every request is recorded.
 */
import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";

export interface ImdsRequest {
  readonly method: string;
  readonly path: string;
  readonly ttl: string | undefined;
  readonly token: string | undefined;
}

export class FakeImds {
  readonly requests: ImdsRequest[] = [];
  /** Metadata items by path (e.g. /latest/meta-data/instance-id); absent ones answer 404. */
  readonly items = new Map<string, string>();
  private readonly valid = new Set<string>();
  private issued = 0;
  private server: Server | undefined;
  url = "";

  async start(): Promise<this> {
    this.server = createServer((req, res) => {
      req.resume();
      const answer = (status: number, body = "") => {
        res.writeHead(status, { "content-type": "text/plain" });
        res.end(body);
      };
      const record = this.record(req);
      if (record.path === "/latest/api/token") {
        if (req.method !== "PUT") return answer(405);
        const ttl = Number(record.ttl);
        if (record.ttl === undefined || !Number.isInteger(ttl) || ttl < 1 || ttl > 21_600) return answer(400);
        const token = `token-${++this.issued}`;
        this.valid.add(token);
        res.setHeader("x-aws-ec2-metadata-token-ttl-seconds", String(ttl));
        return answer(200, token);
      }
      if (req.method !== "GET") return answer(405);
      // IMDSv2 only: no token, or one not issued (or revoked), is refused.
      if (!record.token || !this.valid.has(record.token)) return answer(401);
      const item = this.items.get(record.path);
      return item === undefined ? answer(404) : answer(200, item);
    });
    await new Promise<void>((resolve) => this.server!.listen(0, "127.0.0.1", resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  private record(req: IncomingMessage): ImdsRequest {
    const header = (name: string) => {
      const v = req.headers[name];
      return Array.isArray(v) ? v[0] : v;
    };
    const r = {
      method: req.method ?? "",
      path: (req.url ?? "").split("?")[0]!,
      ttl: header("x-aws-ec2-metadata-token-ttl-seconds"),
      token: header("x-aws-ec2-metadata-token"),
    };
    this.requests.push(r);
    return r;
  }

  /** Every token issued so far stops working (as after the service restarts). */
  revokeTokens(): void {
    this.valid.clear();
  }

  tokenRequests(): ImdsRequest[] {
    return this.requests.filter((r) => r.path === "/latest/api/token");
  }

  gets(path: string): ImdsRequest[] {
    return this.requests.filter((r) => r.method === "GET" && r.path === path);
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

export const INSTANCE_ID_PATH = "/latest/meta-data/instance-id";
export const GROUP_NAME_PATH = "/latest/meta-data/tags/instance/aws:autoscaling:groupName";
export const TARGET_STATE_PATH = "/latest/meta-data/autoscaling/target-lifecycle-state";
