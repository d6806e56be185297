// A hono app as it runs on Lambda: hono/aws-lambda adapts the API Gateway event.
import { readFile } from "node:fs/promises";
import { Hono } from "hono";
import { handle } from "hono/aws-lambda";

// Top-level await and import.meta.url work as on Lambda: the greeting is read once, at load.
const greeting = (await readFile(new URL("../greeting.txt", import.meta.url), "utf8")).trim();

const app = new Hono();
app.get("/", (c) => c.text(greeting));
app.get("/books/:id", (c) => c.json({ id: c.req.param("id"), q: c.req.query("q") ?? null }));
app.post("/books", async (c) => c.json({ created: await c.req.json() }, 201));

export const handler = handle(app);
