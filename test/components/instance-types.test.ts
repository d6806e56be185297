import assert from "node:assert/strict";
import { checkKvmInstanceType } from "../../components/instance-types.ts";

describe("checkKvmInstanceType", () => {
  for (const type of ["c5.metal", "m7i.metal-24xl", "m5n.metal", "c8i.metal-48xl", "m7a.metal-48xl"]) {
    it(`accepts bare-metal ${type}`, () => {
      assert.deepEqual(checkKvmInstanceType(type, false), { ok: true, kvm: "metal" });
    });
  }

  for (const type of ["c8i.large", "m8i.4xlarge", "r8i.48xlarge", "c8i-flex.xlarge", "m8id.2xlarge"]) {
    it(`accepts ${type} only with nested virtualization`, () => {
      assert.deepEqual(checkKvmInstanceType(type, true), { ok: true, kvm: "nested" });
      const refused = checkKvmInstanceType(type, false);
      assert.equal(refused.ok, false);
      assert.match(refused.ok ? "" : refused.reason, /exposes KVM only with nested virtualization/);
    });
  }

  it("refuses virtualized types without KVM and says what would work", () => {
    assert.deepEqual(checkKvmInstanceType("c5.large", false), {
      ok: false,
      reason:
        "c5.large has no KVM: use a .metal type (for example c5.metal, m7i.metal-24xl) or c8i/m8i/r8i with nestedVirtualization",
    });
    assert.equal(checkKvmInstanceType("c7i.4xlarge", true).ok, false);
  });

  it("refuses Graviton metal types because hosts run x86_64 Firecracker", () => {
    const result = checkKvmInstanceType("m7g.metal", false);
    assert.equal(result.ok, false);
    assert.match(result.ok ? "" : result.reason, /Graviton \(arm64\)/);
    assert.equal(checkKvmInstanceType("c7gn.metal", false).ok, false);
  });

  it("refuses a1.metal (Graviton 1) and every EC2 Mac type", () => {
    const reason = (type: string) => {
      const result = checkKvmInstanceType(type, false);
      return result.ok ? "accepted" : result.reason;
    };
    assert.match(reason("a1.metal"), /Graviton \(arm64\)/);
    for (const type of ["mac1.metal", "mac2.metal", "mac2-m2pro.metal", "mac2-m1ultra.metal"])
      assert.match(reason(type), /EC2 Mac type/, type);
    assert.deepEqual(checkKvmInstanceType("m5a.metal", false), { ok: true, kvm: "metal" });
  });

  it("refuses nested virtualization on a metal type", () => {
    const result = checkKvmInstanceType("c5.metal", true);
    assert.equal(result.ok, false);
    assert.match(result.ok ? "" : result.reason, /nested virtualization applies only to c8i, m8i and r8i/);
  });
});
