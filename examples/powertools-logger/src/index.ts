// Powertools' Logger writes one JSON line per entry, with the Lambda context's request id in it.
import { Logger } from "@aws-lambda-powertools/logger";

const logger = new Logger({ serviceName: "orders" });

interface Event {
  rawPath: string;
  body?: string;
}

export async function handler(event: Event, context: { awsRequestId: string; functionName: string }) {
  logger.addContext(context as never);
  const order = JSON.parse(event.body ?? "{}") as { item?: string };
  logger.info("order received", { item: order.item ?? null, path: event.rawPath });
  return { statusCode: 202, body: JSON.stringify({ accepted: order.item ?? null }) };
}
