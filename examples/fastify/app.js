// A fastify app as it runs on Lambda: @fastify/aws-lambda injects each event into the app.
import awsLambdaFastify from "@fastify/aws-lambda";
import Fastify from "fastify";

const app = Fastify();
app.get("/", async () => ({ hello: "fastify" }));
app.get("/items/:id", async (request) => ({ id: request.params.id }));
app.post("/items", async (request, reply) => reply.code(201).send({ created: request.body }));

export const handler = awsLambdaFastify(app);
// As @fastify/aws-lambda advises: the app is ready before the first event, not during it.
await app.ready();
