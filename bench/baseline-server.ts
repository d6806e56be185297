/**
 * The benchmark's baseline: a bare Node HTTP server answering the hello-world JSON-RPC call in-process,
 * with the same class the example deploys. What the agent adds is measured against this. With
 * `--listen unix:/path` it is also the minimal runtime behind the one-hop proxy (bench/peers/).
 */
import { createServer } from "node:http";

class HelloWorldService {
  helloWorld(): string {
    return "Hello world!";
  }
}

const i = process.argv.indexOf("--listen");
const listen = i >= 0 ? process.argv[i + 1] : undefined;

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
const announce = () => {
  const address = server.address();
  process.stdout.write(
    `${JSON.stringify({ port: typeof address === "object" && address ? address.port : 0 })}\n`,
  );
};
if (listen?.startsWith("unix:")) server.listen(listen.slice("unix:".length), announce);
else server.listen(0, "127.0.0.1", announce);
process.on("SIGTERM", () => server.close(() => process.exit(0)));
