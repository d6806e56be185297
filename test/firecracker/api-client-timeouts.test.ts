import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import { tmpdir } from "node:os";
import path from "node:path";
import {
  FirecrackerApiClient,
  FirecrackerConnectionError,
} from "../../host-agent/sandbox/firecracker/api-client.ts";

/** A Firecracker API stand-in on a Unix socket that answers every request 204 after `delayMs`. */
async function slowApi(socketPath: string, delayMs: number): Promise<Server> {
  const server = createServer((req, res) => {
    req.resume();
    setTimeout(() => res.writeHead(204).end(), delayMs);
  });
  await new Promise<void>((resolve) => server.listen(socketPath, resolve));
  return server;
}

describe("FirecrackerApiClient deadlines", () => {
  let dir: string;
  let server: Server;
  let client: FirecrackerApiClient;

  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "fc-api-timeouts-"));
    const socketPath = path.join(dir, "api.sock");
    server = await slowApi(socketPath, 1_500);
    client = new FirecrackerApiClient({ socketPath, timeoutMs: 400, snapshotTimeoutMs: 5_000 });
  });

  after(async () => {
    await client.close();
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await rm(dir, { recursive: true, force: true });
  });

  it("gives snapshot create and load the long deadline and config calls the short one", async () => {
    await client.createSnapshot({ snapshot_type: "Full", snapshot_path: "/vmstate", mem_file_path: "/mem" });
    await client.loadSnapshot({
      snapshot_path: "/vmstate",
      mem_backend: { backend_type: "File", backend_path: "/mem" },
    });
    await assert.rejects(
      client.putMachineConfig({ vcpu_count: 1, mem_size_mib: 256 }),
      FirecrackerConnectionError,
    );
  });

  it("defaults the snapshot deadline to minutes, not the 5 s of config calls", () => {
    const c = new FirecrackerApiClient({ socketPath: path.join(dir, "none.sock") });
    assert.ok((c as unknown as { snapshotTimeoutMs: number }).snapshotTimeoutMs >= 60_000);
  });
});
