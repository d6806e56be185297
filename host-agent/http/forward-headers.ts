/**
 * The headers of a call the data plane forwards to an instance: the client's own headers as it sent
 * them (names lower-cased, repeats joined the way API Gateway joins them), less those of the client's
 * connection, plus what the host tells the guest about the call: its request id, its time budget and
 * where it came from. Pure: the caller reads the socket, this decides.
 *
 * Where a call came from is the peer the agent saw, unless that peer is a proxy the operator trusts
 * (FAAS_TRUSTED_PROXIES, the load balancer's range): then the client is the nearest address in
 * X-Forwarded-For that is not a trusted proxy. The client's own X-Forwarded-For is never believed, only
 * appended to, so a caller can put anything in it and still be seen from where it really is.
 */
import { BlockList, isIP } from "node:net";
import { addressRangeProblem, parseAddressRange } from "../../contracts/address-range.ts";
import {
  CONNECTION_HEADERS,
  REQUEST_ID_HEADER,
  SOURCE_IP_HEADER,
  TIMEOUT_HEADER,
} from "../../contracts/guest-protocol.ts";
import { HOP_BY_HOP } from "./json.ts";

export class TrustedProxyError extends Error {
  override readonly name = "TrustedProxyError";
}

/** The address ranges whose X-Forwarded-For, -Proto and -Port the agent believes. */
export class TrustedProxies {
  private readonly list = new BlockList();
  private constructor(readonly cidrs: readonly string[]) {
    for (const cidr of cidrs) {
      const range = parseAddressRange(cidr);
      if (!range) throw new TrustedProxyError(`trusted proxy ${addressRangeProblem(cidr)}`);
      this.list.addSubnet(range.address, range.prefix, range.family);
    }
  }

  /** Throws TrustedProxyError naming the first entry that is not an IPv4 or IPv6 CIDR. */
  static parse(cidrs: readonly string[]): TrustedProxies {
    return new TrustedProxies(cidrs.map((c) => c.trim()).filter(Boolean));
  }

  static readonly none = TrustedProxies.parse([]);

  trusts(address: string): boolean {
    if (this.cidrs.length === 0) return false;
    const family = isIP(address);
    if (family === 0) return false;
    return this.list.check(address, family === 4 ? "ipv4" : "ipv6");
  }
}

/** "::ffff:10.0.0.1", as a dual-stack socket names an IPv4 peer, is 10.0.0.1. */
export function plainAddress(address: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  return mapped ? mapped[1]! : address;
}

export interface ForwardedCallOrigin {
  /** The request's headers as received: IncomingMessage.rawHeaders (names as sent, repeats kept). */
  readonly rawHeaders: readonly string[];
  /** The agent's peer: the client, or the load balancer in front of the agent. */
  readonly peerAddress: string | undefined;
  /** The agent's port the call arrived on: the client's port when no trusted proxy names one. */
  readonly localPort: number | undefined;
  readonly trustedProxies: TrustedProxies;
  readonly requestId: string;
  /** What is left of the call's deadline, ms. */
  readonly timeoutMs: number;
}

/** Where the call came from, and the X-Forwarded-For that says so (the client's chain, ending in it). */
export function resolveClient(
  claimed: readonly string[],
  peer: string,
  trusted: TrustedProxies,
): { sourceIp: string; forwardedFor: string[] } {
  const chain = [...claimed, peer];
  // From the agent outwards: every hop a trusted proxy added is believed, the first other one is the client.
  let i = chain.length - 1;
  while (i > 0 && trusted.trusts(chain[i]!)) i--;
  // A trusted proxy passed on an entry that is no address: the proxy is as far as the agent can see.
  if (isIP(chain[i]!) === 0 && i < chain.length - 1) i++;
  return { sourceIp: chain[i]!, forwardedFor: chain.slice(0, i + 1) };
}

/** Headers of the client's connection, never forwarded (a call's Connection header may name more). */
const CONNECTION_ONLY: ReadonlySet<string> = new Set([...HOP_BY_HOP, ...CONNECTION_HEADERS]);

/** Every comma-separated entry of a header's values, trimmed, empty ones left out. */
function entriesOf(values: readonly string[] | undefined): string[] {
  const out: string[] = [];
  for (const v of values ?? [])
    for (const one of v.split(",")) {
      const t = one.trim();
      if (t) out.push(t);
    }
  return out;
}

export function forwardHeaders(origin: ForwardedCallOrigin): Record<string, string> {
  const seen = new Map<string, string[]>();
  const raw = origin.rawHeaders;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i]!.toLowerCase();
    const values = seen.get(name);
    if (values) values.push(raw[i + 1]!);
    else seen.set(name, [raw[i + 1]!]);
  }
  // A client may name more headers of its connection in Connection itself.
  const connection = seen.get("connection");
  let dropped = CONNECTION_ONLY;
  if (connection) {
    const more = new Set(CONNECTION_ONLY);
    for (const value of connection) for (const name of value.split(",")) more.add(name.trim().toLowerCase());
    dropped = more;
  }

  const peer = plainAddress(origin.peerAddress ?? "");
  const peerTrusted = origin.trustedProxies.trusts(peer);
  const { sourceIp, forwardedFor } = resolveClient(
    entriesOf(seen.get("x-forwarded-for")),
    isIP(peer) ? peer : "0.0.0.0",
    origin.trustedProxies,
  );
  // The scheme and port the client used: a trusted proxy's last word, else this connection's own.
  const proto = peerTrusted
    ? entriesOf(seen.get("x-forwarded-proto"))
        .at(-1)
        ?.toLowerCase()
        .match(/^https?$/)?.[0]
    : undefined;
  const port = peerTrusted
    ? entriesOf(seen.get("x-forwarded-port"))
        .at(-1)
        ?.match(/^\d{1,5}$/)?.[0]
    : undefined;

  const headers: Record<string, string> = {};
  for (const [name, values] of seen) {
    if (dropped.has(name) || name.startsWith("x-faas-")) continue;
    if (name === "x-forwarded-for" || name === "x-forwarded-proto" || name === "x-forwarded-port") continue;
    // API Gateway joins repeats with ","; cookies keep their own separator, as one Cookie header has it,
    // and a second Host is dropped (as Node does): a call names one host.
    headers[name] = name === "host" ? values[0]! : values.join(name === "cookie" ? "; " : ",");
  }
  headers["x-forwarded-for"] = forwardedFor.join(", ");
  headers["x-forwarded-proto"] = proto ?? "http";
  headers["x-forwarded-port"] =
    port ?? (proto ? (proto === "https" ? "443" : "80") : String(origin.localPort ?? 80));
  headers[SOURCE_IP_HEADER] = sourceIp;
  headers[REQUEST_ID_HEADER] = origin.requestId;
  headers[TIMEOUT_HEADER] = String(Math.max(0, origin.timeoutMs));
  return headers;
}
