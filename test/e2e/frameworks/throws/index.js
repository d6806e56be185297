// A handler that fails: the client must learn nothing of why, the function's logs everything.
export async function handler(event) {
  if (event.rawPath === "/reject") return Promise.reject(new TypeError("rejected with the token s3cr3t"));
  throw new Error("the database password is hunter2");
}
