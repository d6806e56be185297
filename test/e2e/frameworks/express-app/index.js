// An express app on Lambda the usual way: serverless-http around the app, exported as the handler.
import express from "express";
import serverless from "serverless-http";

const app = express();
app.use(express.raw({ type: () => true }));

app.post("/echo/:id", (req, res) => {
  res.cookie("seen", req.params.id, { path: "/", httpOnly: true });
  res.set("x-answer", "42");
  res.json({
    ip: req.ip,
    path: req.path,
    query: req.query,
    headers: req.headers,
    body: Buffer.isBuffer(req.body) ? req.body.toString("base64") : null,
    event: req.lambdaEvent,
  });
});
app.get("/old", (_req, res) => res.redirect("/landing"));
app.get("/landing", (_req, res) => res.type("text/plain").send("landed"));

export const handler = serverless(app, {
  request(req, event) {
    req.lambdaEvent = event;
  },
});
