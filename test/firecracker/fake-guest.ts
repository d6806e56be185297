/**
 * TEST DOUBLE for the guest runtime inside a VM (the real one is written by the lead): answers
 * /_faas/health and records /_faas/init on the slot's clone address.
 */
import { createServer, type Server } from "node:http";

export interface GuestInitCall {
  readonly instanceId: string;
  readonly unixTimeMs: number;
  readonly entropy: string;
  readonly controlSecret?: string;
}

export class FakeGuest {
  private constructor(
    private readonly server: Server,
    readonly host: string,
    readonly port: number,
  ) {}

  static async start(
    host: string,
    port: number,
    inits: GuestInitCall[],
    refuseInit = false,
  ): Promise<FakeGuest> {
    const server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        if (req.method === "GET" && req.url === "/_faas/health") {
          res.writeHead(200, { "content-type": "application/json" }).end('{"ok":true}');
        } else if (req.method === "POST" && req.url === "/_faas/init") {
          if (refuseInit) {
            res.writeHead(500).end("init refused by the fake guest");
            return;
          }
          inits.push(JSON.parse(Buffer.concat(chunks).toString("utf8")) as GuestInitCall);
          res.writeHead(204).end();
        } else {
          res.writeHead(404).end();
        }
      });
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, host, () => resolve());
    });
    return new FakeGuest(server, host, port);
  }

  async stop(): Promise<void> {
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }
}
