/**
 * The one-hop peer: node:http in front of a minimal runtime (bench/baseline-server.ts on a Unix socket),
 * forwarding each call over keep-alive connections and streaming the answer back. It costs exactly one
 * extra hop over the bare server, with nothing else a platform does (no lookup, no jail, no metrics):
 * the yardstick for what the agent's own hop may cost.
 *
 *   node --import tsx bench/peers/one-hop-proxy.ts --upstream /path/to/runtime.sock
 */
import { Agent, createServer, request } from "node:http";

const i = process.argv.indexOf("--upstream");
const socketPath = i >= 0 ? process.argv[i + 1] : undefined;
if (!socketPath) {
  process.stderr.write("one-hop-proxy: --upstream /path.sock is required\n");
  process.exit(2);
}

const agent = new Agent({ keepAlive: true, maxSockets: 64 });
const server = createServer((req, res) => {
  const upstream = request(
    { socketPath, agent, method: req.method, path: req.url, headers: req.headers },
    (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
    },
  );
  upstream.on("error", (err) => {
    res.writeHead(502, { "content-type": "text/plain" });
    res.end(err.message);
  });
  req.pipe(upstream);
});
server.keepAliveTimeout = 60_000;
server.listen(0, "127.0.0.1", () => {
  const address = server.address();
  process.stdout.write(
    `${JSON.stringify({ port: typeof address === "object" && address ? address.port : 0 })}\n`,
  );
});
process.on("SIGTERM", () => server.close(() => process.exit(0)));
