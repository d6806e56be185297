/** An error the HTTP layer turns into a response: a status, a stable code and a sentence for humans. */
export class ApiError extends Error {
  override readonly name = "ApiError";
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

/** The first `shown` items of a list of problems, "; "-joined, and how many more there are. */
export function someOf(items: readonly string[], shown = 3): string {
  const more = items.length > shown ? ` (and ${items.length - shown} more)` : "";
  return `${items.slice(0, shown).join("; ")}${more}`;
}
