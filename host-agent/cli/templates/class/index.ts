/**
 * A Genezio-style class: every public method of an exported class is callable over JSON-RPC 2.0 at
 * POST /<function>, as {"jsonrpc":"2.0","method":"Greeter.hello","params":["Ada"],"id":1}.
 * One instance of the class is kept per sandbox instance; methods may be async. A method that throws
 * answers a JSON-RPC error.
 */
export class Greeter {
  private calls = 0;

  hello(name: string): string {
    this.calls += 1;
    console.log(`hello called for ${name}`);
    return `Hello, ${name}!`;
  }

  async stats(): Promise<{ calls: number }> {
    return { calls: this.calls };
  }
}
