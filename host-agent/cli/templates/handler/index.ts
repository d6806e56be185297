/**
 * A Lambda-style handler: every method and path under /<function>/ arrives as an API Gateway v2
 * (payload 2.0) HTTP event, the function's prefix removed from rawPath. Return a response object, or
 * any other value to have it sent as JSON.
 */
interface HttpEvent {
  rawPath: string;
  rawQueryString: string;
  headers: Record<string, string | undefined>;
  body?: string;
  isBase64Encoded: boolean;
  requestContext: { http: { method: string } };
}

interface HttpResult {
  statusCode: number;
  headers?: Record<string, string>;
  body: string;
}

export async function handler(event: HttpEvent, context: { awsRequestId: string }): Promise<HttpResult> {
  console.log(`${event.requestContext.http.method} ${event.rawPath}`);
  return {
    statusCode: 200,
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      method: event.requestContext.http.method,
      path: event.rawPath,
      query: event.rawQueryString,
      // Binary bodies arrive base64-encoded, with isBase64Encoded set.
      body: event.body ?? null,
      isBase64Encoded: event.isBase64Encoded,
      requestId: context.awsRequestId,
    }),
  };
}
