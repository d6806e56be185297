/**
 * An address range as the agent's FAAS_TRUSTED_PROXIES takes it and the fleet component writes it: an
 * IPv4 or IPv6 CIDR, or a bare address meaning that one address. Pure.
 */
import { isIP } from "node:net";

export interface AddressRange {
  readonly address: string;
  readonly prefix: number;
  readonly family: "ipv4" | "ipv6";
}

/** The range `text` names, or undefined when it names none. */
export function parseAddressRange(text: string): AddressRange | undefined {
  const [address = "", bits, extra] = text.split("/");
  const family = isIP(address);
  if (family === 0 || extra !== undefined) return undefined;
  const max = family === 4 ? 32 : 128;
  const prefix = bits === undefined ? max : /^\d{1,3}$/.test(bits) ? Number(bits) : Number.NaN;
  if (!(prefix >= 0 && prefix <= max)) return undefined;
  return { address, prefix, family: family === 4 ? "ipv4" : "ipv6" };
}

/** Why `text` is not an address range, or undefined when it is one. */
export function addressRangeProblem(text: string): string | undefined {
  return parseAddressRange(text)
    ? undefined
    : `${JSON.stringify(text)} is not an address range: give IPv4 or IPv6 CIDRs such as 10.0.0.0/16 or fd00::/8 (a bare address means just that address)`;
}
