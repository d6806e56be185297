/**
 * The host's nftables rules for sandboxes' traffic, shared by both drivers' networks (the microVMs' slots,
 * firecracker/network-slots.ts; the jails' egress links, process/egress.ts): one rule per guarantee, so
 * the two cannot drift. Each function returns chain lines for traffic arriving on `veths`, an nft
 * interface pattern (a quoted name with a trailing "*" for a prefix). Pure.
 */

/** Where guests' traffic may go out, when it may. */
export interface UplinkEgress {
  /** The interface of the host's way out (its default route). */
  readonly uplink: string;
  /** The resolver guests' DNS is sent to; the one link-local address they may reach (AWS's is one). */
  readonly dnsResolver: string;
}

/**
 * Forward-chain lines: nothing from one sandbox to another; with egress, out of the uplink only, never
 * to the link-local range (the instance metadata service) other than the resolver; everything else
 * from the sandboxes dropped.
 */
export function guestForwardRules(veths: string, egress: UplinkEgress | undefined): string[] {
  return [
    `    iifname ${veths} oifname ${veths} drop`,
    ...(egress
      ? [
          // The metadata service and other link-local services are the host's, not the guests'.
          `    iifname ${veths} ip daddr 169.254.0.0/16 ip daddr != ${egress.dnsResolver} drop`,
          `    iifname ${veths} oifname "${egress.uplink}" accept`,
        ]
      : []),
    `    iifname ${veths} drop`,
  ];
}

/** Input-chain lines: no sandbox opens a connection to the host itself (any of its addresses, any port). */
export function guestInputRules(veths: string): string[] {
  return [`    iifname ${veths} ct state new drop`];
}

/** A NAT chain that masquerades the sandboxes' `sourceCidr` out of the uplink. */
export function uplinkMasqueradeChain(uplink: string, sourceCidr: string): string[] {
  return [
    "  chain postrouting {",
    "    type nat hook postrouting priority srcnat; policy accept;",
    `    oifname "${uplink}" ip saddr ${sourceCidr} masquerade`,
    "  }",
  ];
}
