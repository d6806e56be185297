import assert from "node:assert/strict";
import { subnetCidr } from "../../components/subnet-cidrs.ts";

describe("subnetCidr", () => {
  it("splits a /16 into /20 blocks: public from the bottom, private from the middle", () => {
    assert.equal(subnetCidr("10.40.0.0/16", "public", 0), "10.40.0.0/20");
    assert.equal(subnetCidr("10.40.0.0/16", "public", 2), "10.40.32.0/20");
    assert.equal(subnetCidr("10.40.0.0/16", "private", 0), "10.40.128.0/20");
    assert.equal(subnetCidr("10.40.0.0/16", "private", 7), "10.40.240.0/20");
  });

  it("works for other prefixes and ignores host bits of the VPC address", () => {
    assert.equal(subnetCidr("172.16.5.9/20", "private", 1), "172.16.9.0/24");
    assert.equal(subnetCidr("10.0.0.0/8", "public", 1), "10.16.0.0/12");
  });

  it("refuses prefixes it cannot split and more than eight zones", () => {
    assert.throws(() => subnetCidr("10.0.0.0/26", "public", 0), /between \/8 and \/24/);
    assert.throws(() => subnetCidr("10.0.0.0/16", "public", 8), /at most 8 availability zones/);
  });
});
