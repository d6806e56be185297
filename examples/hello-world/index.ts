// The seed's example: a Genezio-style class; every public method is callable over JSON-RPC.
export class HelloWorldService {
  helloWorld(): string {
    console.log("Hello world - request received!");
    return "Hello world!";
  }

  hello(name: string, from: string): string {
    return `Hello, ${name}, from ${from}!`;
  }
}
