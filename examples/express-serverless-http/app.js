// An express app as it runs on Lambda: serverless-http turns the API Gateway event into a request.
const path = require("node:path");
const express = require("express");
const serverless = require("serverless-http");

const app = express();
app.use(express.json());
// Files next to the code ship with it: express.static and res.sendFile read them from the code folder.
app.use("/static", express.static(path.join(__dirname, "public")));

app.get("/", (_req, res) => {
  res.sendFile(path.join(__dirname, "views", "index.html"));
});

app.get("/users/:id", (req, res) => {
  res.json({ id: req.params.id, query: req.query });
});

app.post("/echo", (req, res) => {
  res.status(201).json({ received: req.body });
});

module.exports.handler = serverless(app);
