// The workerd peer: the hello-world JSON-RPC call answered by a Cloudflare Worker, the same class the
// example deploys (without its console line, like the bare server). Loaded by bench/peers/workerd.ts.
class HelloWorldService {
  helloWorld() {
    return "Hello world!";
  }
}

const service = new HelloWorldService();

export default {
  async fetch(request) {
    const call = await request.json();
    const method = call.method.split(".")[1];
    const body = JSON.stringify({ jsonrpc: "2.0", result: service[method](), error: null, id: call.id });
    return new Response(body, { headers: { "content-type": "application/json" } });
  },
};
