/**
 * Which EC2 instance types can run Firecracker. KVM is exposed on bare-metal types, and (since 2026-02)
 * on C8i/M8i/R8i with nested virtualization enabled. Firecracker's own docs still only list `.metal` hosts,
 * so nested virtualization is opt-in. Hosts run x86_64 Firecracker, so Graviton types are refused.
 */

const METAL = /^[a-z][a-z0-9-]*\.metal(-\d+xl)?$/;
const NESTED_CAPABLE = /^[cmr]8i(d|-flex)?\.(large|\d*xlarge)$/;
/** Graviton families carry a "g" right after the generation digit (m6g, c7gn, m8gd); a1 is Graviton 1. */
const ARM64 = /^([a-z]+\d+g[a-z]*|a1)\./;
/** EC2 Mac types (mac1, mac2, mac2-m2pro, mac-m4...) run macOS on Dedicated Hosts only: no Linux, no KVM. */
const MAC = /^mac[a-z0-9-]*\./;

export type KvmSupport = "metal" | "nested";

export type InstanceTypeCheck =
  | { readonly ok: true; readonly kvm: KvmSupport }
  | { readonly ok: false; readonly reason: string };

/** Decides whether `instanceType` can host Firecracker microVMs, and why not when it cannot. */
export function checkKvmInstanceType(instanceType: string, nestedVirtualization: boolean): InstanceTypeCheck {
  if (MAC.test(instanceType)) {
    return {
      ok: false,
      reason: `${instanceType} is an EC2 Mac type (macOS on a Dedicated Host): hosts run Amazon Linux with KVM; use a .metal type such as c5.metal`,
    };
  }
  if (ARM64.test(instanceType)) {
    return {
      ok: false,
      reason: `${instanceType} is a Graviton (arm64) type; hosts run the x86_64 Firecracker release`,
    };
  }
  if (METAL.test(instanceType)) {
    if (nestedVirtualization) {
      return {
        ok: false,
        reason: `${instanceType} is bare metal: nested virtualization applies only to c8i, m8i and r8i types`,
      };
    }
    return { ok: true, kvm: "metal" };
  }
  if (NESTED_CAPABLE.test(instanceType)) {
    if (!nestedVirtualization) {
      return {
        ok: false,
        reason: `${instanceType} exposes KVM only with nested virtualization: set nestedVirtualization to true, or use a .metal type`,
      };
    }
    return { ok: true, kvm: "nested" };
  }
  return {
    ok: false,
    reason: `${instanceType} has no KVM: use a .metal type (for example c5.metal, m7i.metal-24xl) or c8i/m8i/r8i with nestedVirtualization`,
  };
}
