// A Lambda-style handler (API Gateway v2 HTTP event): existing Lambda code runs as it is.
interface HttpEvent {
  rawPath: string;
  rawQueryString: string;
  headers: Record<string, string>;
  body?: string;
  isBase64Encoded: boolean;
  requestContext: { http: { method: string } };
}

export async function handler(event: HttpEvent, context: { awsRequestId: string }) {
  return {
    statusCode: 200,
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      method: event.requestContext.http.method,
      path: event.rawPath,
      query: event.rawQueryString,
      body: event.body ?? null,
      requestId: context.awsRequestId,
    }),
  };
}
