// A middy handler: the JSON body is parsed by middleware before the handler sees it.
import middy from "@middy/core";
import httpJsonBodyParser from "@middy/http-json-body-parser";
import { greet } from "./greet.ts";

interface Event {
  body: { name?: string };
}

async function baseHandler(event: Event) {
  return { statusCode: 200, body: JSON.stringify({ message: greet(event.body.name ?? "world") }) };
}

export const handler = middy(baseHandler).use(httpJsonBodyParser());
