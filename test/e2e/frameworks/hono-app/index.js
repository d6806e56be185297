// A hono app on Lambda through hono's own adapter, reading the caller's address with getConnInfo.
import { Hono } from "hono";
import { getConnInfo, handle } from "hono/aws-lambda";
import { getCookie } from "hono/cookie";

const app = new Hono();
app.post("/form", async (c) =>
  c.json({
    ip: getConnInfo(c).remote.address,
    url: c.req.url,
    form: await c.req.parseBody(),
    cookies: getCookie(c),
    forwardedFor: c.req.header("x-forwarded-for"),
    proto: c.req.header("x-forwarded-proto"),
    isBase64Encoded: c.env.event.isBase64Encoded,
  }),
);
app.get("/bytes", (c) =>
  c.body(new Uint8Array([0, 1, 254, 255]), 200, { "content-type": "application/octet-stream" }),
);
app.get("/old", (c) => c.redirect("/new"));

export const handler = handle(app);
