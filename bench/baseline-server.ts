/**
 * The benchmark's baseline: a bare Node HTTP server answering the hello-world JSON-RPC call in-process,
 * with the same class the example deploys. What the agent adds is measured against this.
 */
import { createServer } from "node:http";

class HelloWorldService {
  helloWorld(): string {
    return "Hello world!";
  }
}

const service = new HelloWorldService();
const server = createServer((req, res) => {
  const chunks: Buffer[] = [];
  req.on("data", (c: Buffer) => chunks.push(c));
  req.on("end", () => {
    const call = JSON.parse(Buffer.concat(chunks).toString("utf8")) as { method: string; id: number };
    const method = call.method.split(".")[1] as "helloWorld";
    const body = JSON.stringify({ jsonrpc: "2.0", result: service[method](), error: null, id: call.id });
    res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
    res.end(body);
  });
});
server.keepAliveTimeout = 60_000;
server.listen(0, "127.0.0.1", () => {
  const address = server.address();
  process.stdout.write(
    `${JSON.stringify({ port: typeof address === "object" && address ? address.port : 0 })}\n`,
  );
});
process.on("SIGTERM", () => server.close(() => process.exit(0)));
